package controlsvc

import (
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// recorder collects presence events.
type recorder struct {
	mu  sync.Mutex
	evs []fleet.PresenceEvent
}

func (r *recorder) emit(ev fleet.PresenceEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
}

func (r *recorder) events() []fleet.PresenceEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]fleet.PresenceEvent(nil), r.evs...)
}

// take returns the events since the last take as "event machine" strings.
func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.evs {
		out = append(out, e.Event+" "+e.Machine)
	}
	r.evs = nil
	return out
}

func newTestPresence(t *testing.T) (*presence, *recorder) {
	t.Helper()
	rec := &recorder{}
	labels := func(id string) map[string]string { return map[string]string{"id": id} }
	return newPresence(labels, rec.emit), rec
}

func wantEvents(t *testing.T, rec *recorder, want ...string) {
	t.Helper()
	got := rec.take()
	if len(got) != len(want) {
		t.Fatalf("events: got %q, want %q", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("events: got %q, want %q", got, want)
		}
	}
}

func TestPresenceJoinAndLeave(t *testing.T) {
	p, rec := newTestPresence(t)
	a1 := connKey{"A", 1}
	a2 := connKey{"A", 2}
	b1 := connKey{"B", 1}

	p.connected(a1, "agent:web01")
	wantEvents(t, rec, "joined web01")
	if !p.online("web01") {
		t.Fatal("web01 not online after joining")
	}

	// A second session (another cid, another server) does not flap it.
	p.connected(a2, "agent:web01")
	p.connected(b1, "agent:web01")
	wantEvents(t, rec)
	// A repeated connect event for the same connection changes nothing.
	p.connected(a1, "agent:web01")
	wantEvents(t, rec)
	if s := p.snapshot(); len(s.Servers) != 1 || s.Servers[0].Connections != 3 {
		t.Fatalf("snapshot: got %+v, want web01 with 3 connections", s.Servers)
	}

	p.disconnected(a1, "Client Closed")
	p.disconnected(b1, "Client Closed")
	wantEvents(t, rec)
	if !p.online("web01") {
		t.Fatal("web01 went offline with a connection left")
	}
	// A repeated disconnect for a gone connection changes nothing.
	p.disconnected(a1, "Client Closed")
	wantEvents(t, rec)

	p.disconnected(a2, "Stale Connection")
	evs := rec.events()
	wantEvents(t, rec, "left web01")
	if evs[0].Reason != "Stale Connection" {
		t.Errorf("left reason: got %q, want %q", evs[0].Reason, "Stale Connection")
	}
	if evs[0].Labels["id"] != "web01" {
		t.Errorf("left labels: got %v, want id=web01", evs[0].Labels)
	}
	if p.online("web01") {
		t.Fatal("web01 online after its last connection closed")
	}
	if len(p.snapshot().Servers) != 0 {
		t.Fatal("snapshot not empty")
	}
}

func TestPresenceDistinguishesServers(t *testing.T) {
	// The same cid on two servers is two connections.
	p, rec := newTestPresence(t)
	p.connected(connKey{"A", 7}, "agent:web01")
	p.connected(connKey{"B", 7}, "agent:web02")
	wantEvents(t, rec, "joined web01", "joined web02")
	p.disconnected(connKey{"A", 7}, "Client Closed")
	wantEvents(t, rec, "left web01")
	if !p.online("web02") {
		t.Fatal("closing A:7 took web02 (B:7) offline")
	}
}

func TestPresenceOperatorsNeverEmit(t *testing.T) {
	p, rec := newTestPresence(t)
	k := connKey{"A", 1}
	p.connected(k, "operator:alice")
	p.connected(connKey{"A", 2}, "")
	p.connected(connKey{"A", 3}, "cc-control-fleet")
	wantEvents(t, rec)
	if got := p.connsOf("operator:alice"); len(got) != 1 || got[0] != k {
		t.Fatalf("connsOf operator: got %v, want [%v]", got, k)
	}
	if len(p.snapshot().Servers) != 0 {
		t.Fatal("an operator appears in the ONLINE list")
	}
	p.disconnected(k, "Client Closed")
	p.serverGone("A")
	p.resync(p.generation(), map[string]map[uint64]string{"A": {9: "operator:bob"}}, nil, time.Time{})
	wantEvents(t, rec)
	if p.online("alice") || p.online("operator:alice") {
		t.Fatal("operator reported online")
	}
}

func TestPresenceConnsOf(t *testing.T) {
	p, _ := newTestPresence(t)
	p.connected(connKey{"A", 1}, "agent:web01")
	p.connected(connKey{"B", 4}, "agent:web01")
	p.connected(connKey{"A", 2}, "agent:web02")
	got := p.connsOf("agent:web01")
	sort.Slice(got, func(i, j int) bool { return got[i].server < got[j].server })
	if len(got) != 2 || got[0] != (connKey{"A", 1}) || got[1] != (connKey{"B", 4}) {
		t.Fatalf("connsOf: got %v, want [{A 1} {B 4}]", got)
	}
	if got := p.connsOf("agent:nobody"); len(got) != 0 {
		t.Fatalf("connsOf unknown: got %v", got)
	}
}

// TestPresenceTombstoneStopsGhost: the snapshot was taken while the
// connection was open, but its disconnect is handled before the snapshot
// is folded in. It must not come back as a ghost.
// TestPresenceStaleTombstoneLosesToCONNZ: a disconnect event for a
// connection the broker still lists seconds later does not keep that
// machine out of presence for good; a fresh one still wins.
func TestPresenceStaleTombstoneLosesToCONNZ(t *testing.T) {
	p, rec := newTestPresence(t)
	now := time.Date(2046, 1, 2, 3, 4, 5, 0, time.UTC) // any date: only the tombstone's age counts
	p.now = func() time.Time { return now }
	k := connKey{"A", 7}
	p.disconnected(k, "Client Closed")
	// A snapshot asked for at once still lists it: the event wins.
	p.resync(p.generation(), map[string]map[uint64]string{"A": {7: "agent:web07"}}, nil, now)
	if p.online("web07") {
		t.Fatal("a snapshot taken right after the disconnect event resurrected the connection")
	}
	// Asked for well after the event and still listed: alive.
	p.resync(p.generation(), map[string]map[uint64]string{"A": {7: "agent:web07"}}, nil, now.Add(tombstoneTrust+time.Second))
	if !p.online("web07") {
		t.Fatal("a connection the broker keeps listing stayed out of presence")
	}
	wantEvents(t, rec, "joined web07")
}

func TestPresenceTombstoneStopsGhost(t *testing.T) {
	t.Run("connect seen", func(t *testing.T) {
		p, rec := newTestPresence(t)
		k := connKey{"A", 1}
		p.connected(k, "agent:web01")
		gen := p.generation()
		p.disconnected(k, "Client Closed")
		wantEvents(t, rec, "joined web01", "left web01")
		p.resync(gen, map[string]map[uint64]string{"A": {1: "agent:web01"}}, nil, time.Time{})
		wantEvents(t, rec)
		if p.online("web01") {
			t.Fatal("a closed connection came back from a stale snapshot")
		}
	})
	t.Run("connect never seen", func(t *testing.T) {
		p, rec := newTestPresence(t)
		k := connKey{"A", 1}
		gen := p.generation()
		p.disconnected(k, "Client Closed")
		p.resync(gen, map[string]map[uint64]string{"A": {1: "agent:web01"}}, nil, time.Time{})
		wantEvents(t, rec)
		// A late connect event for the closed connection is ignored too.
		p.connected(k, "agent:web01")
		wantEvents(t, rec)
		if p.online("web01") {
			t.Fatal("ghost")
		}
	})
}

func TestPresenceTombstonesArePruned(t *testing.T) {
	p, _ := newTestPresence(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p.now = func() time.Time { return now }
	p.disconnected(connKey{"A", 1}, "Client Closed")
	now = now.Add(time.Minute)
	p.disconnected(connKey{"A", 2}, "Client Closed")
	now = now.Add(90 * time.Second)
	p.resync(p.generation(), map[string]map[uint64]string{"A": {}}, nil, time.Time{})
	p.mu.Lock()
	_, old := p.tombstones[connKey{"A", 1}]
	_, recent := p.tombstones[connKey{"A", 2}]
	p.mu.Unlock()
	if old || !recent {
		t.Fatalf("tombstones after resync: old kept=%v, recent kept=%v; want false, true", old, recent)
	}
}

func TestPresenceResync(t *testing.T) {
	p, rec := newTestPresence(t)
	p.connected(connKey{"A", 1}, "agent:web01") // will be missing from A's snapshot
	p.connected(connKey{"A", 2}, "agent:web02") // present in A's snapshot
	p.connected(connKey{"B", 1}, "agent:web03") // B does not answer
	rec.take()
	gen := p.generation()
	p.connected(connKey{"A", 3}, "agent:web04") // added after the mark: kept
	wantEvents(t, rec, "joined web04")

	p.resync(gen, map[string]map[uint64]string{
		"A": {2: "agent:web02", 5: "agent:web05"}, // web05: a connect we missed
		"C": {1: "agent:web06", 2: "operator:x"},
	}, nil, time.Time{})
	got := rec.take()
	sort.Strings(got)
	want := []string{"joined web05", "joined web06", "left web01", "left web03"}
	if len(got) != len(want) {
		t.Fatalf("events: got %q, want %q", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("events: got %q, want %q", got, want)
		}
	}
	for id, on := range map[string]bool{"web01": false, "web02": true, "web03": false, "web04": true, "web05": true, "web06": true} {
		if p.online(id) != on {
			t.Errorf("%s online: got %v, want %v", id, !on, on)
		}
	}
	// A resync that agrees changes nothing.
	p.resync(p.generation(), map[string]map[uint64]string{
		"A": {2: "agent:web02", 3: "agent:web04", 5: "agent:web05"},
		"C": {1: "agent:web06", 2: "operator:x"},
	}, nil, time.Time{})
	wantEvents(t, rec)
}

func TestPresenceResyncKeepsMachineWithOtherConnection(t *testing.T) {
	p, rec := newTestPresence(t)
	p.connected(connKey{"A", 1}, "agent:web01")
	p.connected(connKey{"B", 1}, "agent:web01")
	rec.take()
	p.resync(p.generation(), map[string]map[uint64]string{"B": {1: "agent:web01"}}, nil, time.Time{})
	wantEvents(t, rec)
	if s := p.snapshot(); len(s.Servers) != 1 || s.Servers[0].Connections != 1 {
		t.Fatalf("snapshot: got %+v, want web01 with one connection", s.Servers)
	}
}

func TestPresenceServerGone(t *testing.T) {
	p, rec := newTestPresence(t)
	p.connected(connKey{"A", 1}, "agent:web01")
	p.connected(connKey{"A", 2}, "agent:web02")
	p.connected(connKey{"B", 1}, "agent:web02")
	p.connected(connKey{"B", 2}, "agent:web03")
	rec.take()
	p.serverGone("A")
	evs := rec.events()
	wantEvents(t, rec, "left web01")
	if evs[0].Reason != "broker A shut down" {
		t.Errorf("reason: got %q, want %q", evs[0].Reason, "broker A shut down")
	}
	if !p.online("web02") || !p.online("web03") {
		t.Fatal("machines on the surviving broker went offline")
	}
	p.serverGone("nowhere")
	wantEvents(t, rec)
}

// TestPresenceExpiryGrace: a connection closed because its credentials
// expired does not take the machine offline while it reconnects.
//
// expiryGrace is a package constant (10 s), so the timer firing is
// simulated by calling expire directly.
func TestPresenceExpiryGrace(t *testing.T) {
	t.Run("reconnects within grace", func(t *testing.T) {
		p, rec := newTestPresence(t)
		p.connected(connKey{"A", 1}, "agent:web01")
		rec.take()
		p.disconnected(connKey{"A", 1}, "Authentication Expired")
		wantEvents(t, rec)
		if !p.online("web01") {
			t.Fatal("offline during the grace")
		}
		p.connected(connKey{"A", 2}, "agent:web01")
		wantEvents(t, rec) // no second joined
		p.expire("web01")  // a timer that fired late changes nothing
		wantEvents(t, rec)
		if !p.online("web01") {
			t.Fatal("offline after reconnecting")
		}
		p.disconnected(connKey{"A", 2}, "Client Closed")
		wantEvents(t, rec, "left web01")
	})
	t.Run("does not reconnect", func(t *testing.T) {
		p, rec := newTestPresence(t)
		p.connected(connKey{"A", 1}, "agent:web01")
		rec.take()
		p.disconnected(connKey{"A", 1}, "Authentication Expired")
		p.expire("web01")
		evs := rec.events()
		wantEvents(t, rec, "left web01")
		if evs[0].Reason == "" {
			t.Error("left after expiry has no reason")
		}
		if p.online("web01") {
			t.Fatal("still online after the grace")
		}
		p.mu.Lock()
		timer := p.machines["web01"]
		p.mu.Unlock()
		if timer != nil {
			t.Fatal("machine state left behind")
		}
	})
	t.Run("other connections remain", func(t *testing.T) {
		p, rec := newTestPresence(t)
		p.connected(connKey{"A", 1}, "agent:web01")
		p.connected(connKey{"A", 2}, "agent:web01")
		rec.take()
		p.disconnected(connKey{"A", 1}, "Authentication Expired")
		p.disconnected(connKey{"A", 2}, "Client Closed")
		wantEvents(t, rec, "left web01")
	})
	t.Run("expire of unknown machine", func(t *testing.T) {
		p, rec := newTestPresence(t)
		p.expire("nobody")
		wantEvents(t, rec)
	})
}

// TestPresenceExpiryTimerFires waits for the real grace timer. It takes
// expiryGrace (10 s), so it is skipped with -short.
func TestPresenceExpiryTimerFires(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for expiryGrace")
	}
	t.Parallel()
	p, rec := newTestPresence(t)
	p.connected(connKey{"A", 1}, "agent:web01")
	rec.take()
	p.disconnected(connKey{"A", 1}, "Authentication Expired")
	waitFor(t, "left after the expiry grace", expiryGrace+5*time.Second, func() bool {
		return len(rec.events()) > 0
	})
	wantEvents(t, rec, "left web01")
}

// TestPresenceStaleExpiryTimer: the first grace timer fires just as the
// machine reconnects (Stop is too late), then the new connection expires
// too. The stale timer must not cut the second grace short.
func TestPresenceStaleExpiryTimer(t *testing.T) {
	p, rec := newTestPresence(t)
	p.connected(connKey{"A", 1}, "agent:web01")
	rec.take()
	p.disconnected(connKey{"A", 1}, "Authentication Expired") // timer T1
	p.mu.Lock()
	g1 := p.machines["web01"].leavingGen
	p.mu.Unlock()
	p.connected(connKey{"A", 2}, "agent:web01")               // T1.Stop, but T1 already fired
	p.disconnected(connKey{"A", 2}, "Authentication Expired") // timer T2
	p.expireGrace("web01", g1)                                // T1's late callback
	wantEvents(t, rec)
	if !p.online("web01") {
		t.Fatal("the stale timer ended the new grace")
	}
}

func TestPresenceSeqAndSnapshot(t *testing.T) {
	p, rec := newTestPresence(t)
	if s := p.snapshot(); s.Seq != 0 || len(s.Servers) != 0 || s.Servers == nil {
		t.Fatalf("empty snapshot: got %+v, want seq 0 and an empty (non-nil) list", s)
	}
	ids := []string{"web03", "10.0.0.1_a", "db01", "web01", "Z"}
	for i, id := range ids {
		p.connected(connKey{"A", uint64(i + 1)}, "agent:"+id)
	}
	p.disconnected(connKey{"A", 1}, "Client Closed")
	p.connected(connKey{"A", 99}, "agent:web03")
	evs := rec.events()
	if len(evs) != 7 {
		t.Fatalf("got %d events, want 7", len(evs))
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq <= evs[i-1].Seq {
			t.Fatalf("seq not strictly increasing: %d after %d", evs[i].Seq, evs[i-1].Seq)
		}
	}
	if evs[0].Seq == 0 {
		t.Fatal("first event has seq 0, which a watcher cannot tell from an empty snapshot")
	}
	s := p.snapshot()
	if s.Seq != evs[len(evs)-1].Seq {
		t.Fatalf("snapshot seq: got %d, want the last event's %d", s.Seq, evs[len(evs)-1].Seq)
	}
	var got []string
	for _, srv := range s.Servers {
		got = append(got, srv.Machine)
		if srv.Labels["id"] != srv.Machine {
			t.Errorf("%s labels: got %v", srv.Machine, srv.Labels)
		}
		if srv.Since.IsZero() || srv.Connections != 1 {
			t.Errorf("%s: since %v, %d connections", srv.Machine, srv.Since, srv.Connections)
		}
	}
	want := []string{"10.0.0.1_a", "Z", "db01", "web01", "web03"}
	if len(got) != len(want) {
		t.Fatalf("snapshot machines: got %q, want %q", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("snapshot machines: got %q, want %q (sorted)", got, want)
		}
	}
	if s.Time.IsZero() || s.Time.Location() != time.UTC {
		t.Errorf("snapshot time: got %v, want a UTC time", s.Time)
	}
}

func TestPresenceConcurrent(t *testing.T) {
	p, rec := newTestPresence(t)
	var wg sync.WaitGroup
	for s := range 4 {
		server := string(rune('A' + s))
		wg.Go(func() {
			for i := range 200 {
				k := connKey{server, uint64(i)}
				p.connected(k, "agent:m"+server)
				_ = p.snapshot()
				p.disconnected(k, "Client Closed")
			}
		})
	}
	wg.Wait()
	evs := rec.events()
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq != evs[i-1].Seq+1 {
			t.Fatalf("seq gap: %d after %d", evs[i].Seq, evs[i-1].Seq)
		}
	}
	if len(p.snapshot().Servers) != 0 {
		t.Fatal("machines left online")
	}
}

// TestPresenceConnectionNamedAfterResync: a CONNZ taken while the broker
// applies a callout's answer lists the connection in FLEET under its raw
// nkey, before it takes the machine's name; its connect event, naming the
// machine, comes after the resync. The machine is ONLINE from that event
// on, and a later snapshot listing the raw name again does not take it
// back; one listing the machine's name does the same as the event.
func TestPresenceConnectionNamedAfterResync(t *testing.T) {
	const raw = "UBJRABC5QE7AYTKA3TGT4TB3N7IWHHYAWCQMNRLP27X5WC57FIUNUBYV"
	k := connKey{"NB", 1176}
	t.Run("connect event after the resync", func(t *testing.T) {
		p, rec := newTestPresence(t)
		p.resync(p.generation(), map[string]map[uint64]string{"NB": {1176: raw}}, nil, time.Time{})
		wantEvents(t, rec)
		p.connected(k, "agent:web01")
		wantEvents(t, rec, "joined web01")
		if !p.online("web01") {
			t.Fatal("a connected agent is not ONLINE: its connect event was dropped as a duplicate")
		}
		// A snapshot taken before the name was applied, folded late.
		p.resync(p.generation(), map[string]map[uint64]string{"NB": {1176: raw}}, nil, time.Time{})
		wantEvents(t, rec)
		if !p.online("web01") {
			t.Fatal("a stale snapshot took the machine's name back")
		}
	})
	t.Run("connect event lost, next resync", func(t *testing.T) {
		p, rec := newTestPresence(t)
		p.resync(p.generation(), map[string]map[uint64]string{"NB": {1176: raw}}, nil, time.Time{})
		p.resync(p.generation(), map[string]map[uint64]string{"NB": {1176: "agent:web01"}}, nil, time.Time{})
		wantEvents(t, rec, "joined web01")
		if s := p.snapshot(); len(s.Servers) != 1 || s.Servers[0].Connections != 1 {
			t.Fatalf("snapshot: %+v, want web01 with one connection", s.Servers)
		}
	})
}
