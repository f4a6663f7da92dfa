package controlsvc

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats-server/v2/server"
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

// fakeSys starts a plain NATS server (no system account) and answers the
// $SYS requests resync makes as two brokers would: NA answers CONNZ with
// the given connections, NB answers PING but fails CONNZ.
func fakeSys(t *testing.T, naConns map[uint64]string) *nats.Conn {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, NoSystemAccount: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("test server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	respond := func(subj string, v any) {
		b, _ := json.Marshal(v)
		if _, err := nc.Subscribe(subj, func(m *nats.Msg) { _ = m.Respond(b) }); err != nil {
			t.Fatal(err)
		}
	}
	type sid struct {
		ID string `json:"id"`
	}
	respond(serverPingSubject, map[string]any{"server": sid{"NA"}})
	respond(serverPingSubject, map[string]any{"server": sid{"NB"}})
	var conns []map[string]any
	for cid, user := range naConns {
		conns = append(conns, map[string]any{"cid": cid, "authorized_user": user})
	}
	respond("$SYS.REQ.SERVER.NA.CONNZ", map[string]any{"server": sid{"NA"}, "data": map[string]any{"total": len(conns), "connections": conns}})
	respond("$SYS.REQ.SERVER.NB.CONNZ", map[string]any{"server": sid{"NB"}, "error": map[string]any{"code": 500, "description": "boom"}})
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return nc
}

func TestResyncFoldsConnz(t *testing.T) {
	rec := &recorder{}
	sys := fakeSys(t, map[uint64]string{1: "agent:web01", 2: "operator:alice", 3: "agent:removed01"})
	kicked := kicks(t, sys)
	tr := &presenceTracker{log: slog.New(slog.DiscardHandler), sys: sys, reg: registryWith(t, []string{"web01", "gone"}, []string{"alice"})}
	tr.state = newPresence(func(string) map[string]string { return nil }, rec.emit)
	tr.state.connected(connKey{"NA", 9}, "agent:gone")
	rec.take()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := tr.resync(ctx); err != nil {
		t.Fatal(err)
	}
	got := rec.take()
	if len(got) != 2 || !contains(got, "joined web01") || !contains(got, "left gone") {
		t.Fatalf("events: got %q, want joined web01 and left gone (and nothing for a machine no longer on record)", got)
	}
	select {
	case cid := <-kicked:
		if cid != 3 {
			t.Fatalf("kicked connection %d, want 3 (removed01)", cid)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the connection of a machine no longer on record was not closed")
	}
}

// TestResyncKeepsBrokerWhoseConnzFailed: resync logs "CONNZ failed;
// keeping what is known of that broker", but presence.resync treats a
// server missing from the snapshot as gone, so every machine on it is
// reported as left.
func TestResyncKeepsBrokerWhoseConnzFailed(t *testing.T) {
	rec := &recorder{}
	tr := &presenceTracker{log: slog.New(slog.DiscardHandler), sys: fakeSys(t, map[uint64]string{1: "agent:web01"}), reg: registryWith(t, []string{"web01", "web02"}, nil)}
	tr.state = newPresence(func(string) map[string]string { return nil }, rec.emit)
	tr.state.connected(connKey{"NA", 1}, "agent:web01")
	tr.state.connected(connKey{"NB", 1}, "agent:web02")
	rec.take()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := tr.resync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("events: got %q, want none", got)
	}
	if !tr.state.online("web02") {
		t.Fatal("web02, on the broker whose CONNZ failed, went offline")
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
