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
