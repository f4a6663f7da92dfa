package controlsvc

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

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

// TestResyncConfirmsWhatCONNZPagesMissed: a connection that a CONNZ page
// skipped (pages shift when connections close between requests) is asked
// about by itself and stays ONLINE; one the broker really no longer has
// is dropped.
func TestResyncConfirmsWhatCONNZPagesMissed(t *testing.T) {
	s, ctx := startTestService(t)
	kp, pub := newUser(t)
	if _, err := s.reg.AddMachine("10.0.0.5_web01", pub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), nats.Nkey(pub, kp.Sign), nats.Name("10.0.0.5_web01"), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitFor(t, "web01 ONLINE", 5*time.Second, func() bool { return s.presence.online("10.0.0.5_web01") })
	server := s.Broker().ID()
	// A connection presence believes in that the broker does not have.
	s.presence.state.connected(connKey{server: server, cid: 999999}, agentUserPrefix+"10.0.0.6_ghost")

	gen := s.presence.state.generation()
	// CONNZ as if a page had skipped web01: the broker answered, without it.
	snap := map[string]map[uint64]string{server: {}}
	s.presence.confirmMissing(ctx, gen, snap)
	s.presence.state.resync(gen, snap, map[string]bool{server: true}, s.presence.state.now())
	if !s.presence.online("10.0.0.5_web01") {
		t.Error("a live connection a CONNZ page missed was dropped")
	}
	if s.presence.online("10.0.0.6_ghost") {
		t.Error("a connection the broker does not have survived the resync")
	}
}
