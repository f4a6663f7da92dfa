package controlsvc

import (
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

func eventMsg(t *testing.T, subject, serverID string, cid uint64, user, reason string) *nats.Msg {
	t.Helper()
	var ev connEvent
	ev.Server.ID = serverID
	ev.Client.ID = cid
	ev.Client.User = user
	ev.Reason = reason
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Subject: subject, Data: b}
}

// registryWith returns a registry holding the given machines and
// operators (admins), each with a fresh key.
func registryWith(t *testing.T, machines, operators []string) *Registry {
	t.Helper()
	reg, _ := openTestRegistry(t)
	for _, id := range machines {
		_, pub := newUser(t)
		if _, err := reg.AddMachine(id, pub, nil, "test", false); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range operators {
		_, pub := newUser(t)
		if _, err := reg.AddOperator(name, pub, fleet.RoleAdmin); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

func TestHandleEvent(t *testing.T) {
	rec := &recorder{}
	tr := &presenceTracker{log: slog.New(slog.DiscardHandler), reg: registryWith(t, []string{"web01", "web02"}, []string{"alice"})}
	tr.state = newPresence(func(string) map[string]string { return nil }, rec.emit)

	tr.handleEvent(eventMsg(t, connectSubject, "NA", 1, "agent:web01", ""))
	tr.handleEvent(eventMsg(t, connectSubject, "NB", 1, "agent:web02", ""))
	tr.handleEvent(eventMsg(t, connectSubject, "NA", 2, "operator:alice", ""))
	wantEvents(t, rec, "joined web01", "joined web02")

	tr.handleEvent(&nats.Msg{Subject: connectSubject, Data: []byte("{not json")})
	wantEvents(t, rec)

	tr.handleEvent(eventMsg(t, disconnectSubject, "NA", 1, "agent:web01", "Client Closed"))
	evs := rec.events()
	wantEvents(t, rec, "left web01")
	if evs[0].Reason != "Client Closed" {
		t.Errorf("reason: got %q, want %q", evs[0].Reason, "Client Closed")
	}

	// A shutdown of another server leaves NB's machines alone.
	tr.handleEvent(&nats.Msg{Subject: "$SYS.SERVER.NA.SHUTDOWN"})
	wantEvents(t, rec)
	tr.handleEvent(&nats.Msg{Subject: "$SYS.SERVER.NB.SHUTDOWN"})
	evs = rec.events()
	wantEvents(t, rec, "left web02")
	if evs[0].Reason != "broker NB shut down" {
		t.Errorf("reason: got %q", evs[0].Reason)
	}
}

// TestConnectOfRemovedIdentityIsClosed: a connection authorised just
// before its machine or operator was removed reaches the service's event
// loop after the removal (whose kick could not see it yet). The service
// closes it through the broker and never shows it ONLINE.
func TestConnectOfRemovedIdentityIsClosed(t *testing.T) {
	rec := &recorder{}
	sys := fakeSys(t, nil)
	kicked := kicks(t, sys)
	tr := &presenceTracker{log: slog.New(slog.DiscardHandler), sys: sys, reg: registryWith(t, []string{"web01"}, nil)}
	tr.state = newPresence(func(string) map[string]string { return nil }, rec.emit)

	tr.handleEvent(eventMsg(t, connectSubject, "NA", 7, "agent:gone01", ""))
	tr.handleEvent(eventMsg(t, connectSubject, "NA", 8, "operator:mallory", ""))
	tr.handleEvent(eventMsg(t, connectSubject, "NA", 9, "agent:web01", ""))
	wantEvents(t, rec, "joined web01")
	got := map[uint64]bool{}
	for range 2 {
		select {
		case cid := <-kicked:
			got[cid] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("kicked %v, want connections 7 and 8", got)
		}
	}
	if !got[7] || !got[8] {
		t.Fatalf("kicked %v, want connections 7 and 8", got)
	}
	select {
	case cid := <-kicked:
		t.Fatalf("kicked connection %d of a machine on record", cid)
	case <-time.After(100 * time.Millisecond):
	}
	if tr.state.online("gone01") {
		t.Fatal("a removed machine shows ONLINE")
	}
}

// kicks answers the KICK requests to broker NA on sys and passes on the
// connection ids.
func kicks(t *testing.T, sys *nats.Conn) chan uint64 {
	t.Helper()
	kicked := make(chan uint64, 4)
	if _, err := sys.Subscribe("$SYS.REQ.SERVER.NA.KICK", func(m *nats.Msg) {
		var req struct {
			CID uint64 `json:"cid"`
		}
		_ = json.Unmarshal(m.Data, &req)
		kicked <- req.CID
		_ = m.Respond([]byte(`{"server":{"id":"NA"},"data":{}}`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := sys.Flush(); err != nil {
		t.Fatal(err)
	}
	return kicked
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestLateConnectOfOlderConnectionClosesIt: the broker's connect events
// do not come in the order the connections were made. An agent's attempt
// whose handshake timed out stays open (nats.go leaves the socket), the
// callout answers it after the agent's next attempt (newest first), and
// its connect event comes last. Whatever the order of the events, the
// older connection is the one closed and the machine stays ONLINE through
// the newer; before, the live newer one was closed and the abandoned one
// kept.
func TestLateConnectOfOlderConnectionClosesIt(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	type conn struct {
		server string
		cid    uint64
		start  time.Time
	}
	for _, tc := range []struct {
		name         string
		first, later conn // in the order their events arrive
		older        conn // the one to close
	}{
		{"one broker, older event last", conn{"NA", 20, t0.Add(time.Second)}, conn{"NA", 10, t0}, conn{"NA", 10, t0}},
		{"one broker, in order", conn{"NA", 10, t0}, conn{"NA", 20, t0.Add(time.Second)}, conn{"NA", 10, t0}},
		// Across brokers the start times decide (ids are per broker).
		{"two brokers, older event last", conn{"NB", 3, t0.Add(time.Second)}, conn{"NA", 9, t0}, conn{"NA", 9, t0}},
		{"two brokers, in order", conn{"NA", 9, t0}, conn{"NB", 3, t0.Add(time.Second)}, conn{"NA", 9, t0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			sys := fakeSys(t, nil)
			kicked := kicks(t, sys)
			tr := &presenceTracker{log: slog.New(slog.DiscardHandler), sys: sys, reg: registryWith(t, []string{"web01"}, nil)}
			tr.leading.Store(true) // the one replica: it closes connections
			tr.state = newPresence(func(string) map[string]string { return nil }, rec.emit)
			tr.state.now = func() time.Time { return t0.Add(time.Minute) }
			connect := func(c conn) *nats.Msg {
				var ev connEvent
				ev.Server.ID, ev.Client.ID, ev.Client.User, ev.Client.Start = c.server, c.cid, "agent:web01", c.start
				b, _ := json.Marshal(ev)
				return &nats.Msg{Subject: connectSubject, Data: b}
			}
			tr.handleEvent(connect(tc.first))
			tr.handleEvent(connect(tc.later))
			wantEvents(t, rec, "joined web01")
			if tc.older.server == "NA" {
				select {
				case cid := <-kicked:
					if cid != tc.older.cid {
						t.Fatalf("closed connection %d, want the older one, %d", cid, tc.older.cid)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("the older connection %d was not closed", tc.older.cid)
				}
			}
			// Its disconnect event leaves the machine ONLINE through the
			// newer connection.
			tr.handleEvent(eventMsg(t, disconnectSubject, tc.older.server, tc.older.cid, "agent:web01", "Kicked"))
			wantEvents(t, rec)
			s := tr.state.snapshot()
			if len(s.Servers) != 1 || s.Servers[0].Connections != 1 {
				t.Fatalf("snapshot after the older connection closed: %+v, want web01 with one connection", s.Servers)
			}
		})
	}
}
