package controlsvc

import (
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

func namedEventMsg(t *testing.T, subject, serverID string, cid uint64, user, name string, start time.Time) *nats.Msg {
	t.Helper()
	var ev connEvent
	ev.Server.ID = serverID
	ev.Client.ID = cid
	ev.Client.User = user
	ev.Client.Name = name
	ev.Client.Start = start
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Subject: subject, Data: b}
}

// TestFactsFromConnectEvents: the facts in an agent's connection name
// reach the joined event and the snapshot; a newer connection of the
// same machine with other facts publishes updated (and the same facts
// again publish nothing); a name claiming another machine's id gives no
// facts, to either machine.
func TestFactsFromConnectEvents(t *testing.T) {
	rec := &recorder{}
	tr := &presenceTracker{log: slog.New(slog.DiscardHandler), reg: registryWith(t, []string{"web01", "web02"}, nil)}
	tr.state = newPresence(func(string) map[string]string { return nil }, rec.emit)
	t0 := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)

	debian := &fleet.Facts{OS: "linux", Platform: "debian", PlatformVersion: "12.5", Arch: "arm64", CPUs: 2}
	tr.handleEvent(namedEventMsg(t, connectSubject, "NA", 1, "agent:web01", fleet.EncodeFactsName("web01", debian), t0))
	evs := rec.events()
	wantEvents(t, rec, "joined web01")
	if !fleet.FactsEqual(evs[0].Facts, debian) {
		t.Fatalf("joined event facts %+v, want %+v", evs[0].Facts, debian)
	}
	if s := tr.state.snapshot(); len(s.Servers) != 1 || !fleet.FactsEqual(s.Servers[0].Facts, debian) {
		t.Fatalf("snapshot %+v, want web01 with %+v", s.Servers, debian)
	}

	// The same facts on a newer connection (a plain reconnect): nothing.
	tr.handleEvent(namedEventMsg(t, connectSubject, "NA", 2, "agent:web01", fleet.EncodeFactsName("web01", debian), t0.Add(time.Second)))
	wantEvents(t, rec)

	// New facts on a newer connection: updated, carrying them.
	upgraded := *debian
	upgraded.PlatformVersion = "13.0"
	tr.handleEvent(namedEventMsg(t, connectSubject, "NA", 3, "agent:web01", fleet.EncodeFactsName("web01", &upgraded), t0.Add(2*time.Second)))
	evs = rec.events()
	wantEvents(t, rec, "updated web01")
	if !fleet.FactsEqual(evs[0].Facts, &upgraded) {
		t.Fatalf("updated event facts %+v, want %+v", evs[0].Facts, upgraded)
	}
	if s := tr.state.snapshot(); s.Servers[0].Facts.PlatformVersion != "13.0" {
		t.Fatalf("snapshot facts %+v, want the updated ones", s.Servers[0].Facts)
	}

	// web02's agent names web01 in its connection name: the callout
	// issued it web02's user, and a machine describes itself only.
	tr.handleEvent(namedEventMsg(t, connectSubject, "NB", 1, "agent:web02", fleet.EncodeFactsName("web01", &fleet.Facts{OS: "windows"}), t0))
	evs = rec.events()
	wantEvents(t, rec, "joined web02")
	if evs[0].Facts != nil {
		t.Fatalf("facts from a name naming another machine: %+v", evs[0].Facts)
	}
	for _, sv := range tr.state.snapshot().Servers {
		if sv.Facts != nil && sv.Facts.OS == "windows" {
			t.Fatalf("%s took facts from another machine's name: %+v", sv.Machine, sv.Facts)
		}
	}

	// A malformed name: the machine is ONLINE, without facts.
	tr.handleEvent(namedEventMsg(t, disconnectSubject, "NB", 1, "agent:web02", "", t0))
	wantEvents(t, rec, "left web02")
	tr.handleEvent(namedEventMsg(t, connectSubject, "NB", 2, "agent:web02", `web02 {"os":`, t0))
	evs = rec.events()
	wantEvents(t, rec, "joined web02")
	if evs[0].Facts != nil {
		t.Fatalf("facts from a malformed name: %+v", evs[0].Facts)
	}
	// A left event carries no facts.
	tr.handleEvent(namedEventMsg(t, disconnectSubject, "NA", 1, "agent:web01", "", t0))
	tr.handleEvent(namedEventMsg(t, disconnectSubject, "NA", 2, "agent:web01", "", t0))
	tr.handleEvent(namedEventMsg(t, disconnectSubject, "NA", 3, "agent:web01", "", t0))
	evs = rec.events()
	wantEvents(t, rec, "left web01")
	if evs[0].Facts != nil {
		t.Fatalf("left event with facts: %+v", evs[0].Facts)
	}
}

// TestFactsFromResync: facts of connections a resync finds (CONNZ's
// names) reach the joined event and the snapshot, and a known
// connection without facts takes them quietly.
func TestFactsFromResync(t *testing.T) {
	p, rec := newTestPresence(t)
	f := &fleet.Facts{OS: "linux", Platform: "alpine"}
	p.resyncIn(nil, p.generation(), map[string]map[uint64]string{"A": {1: "agent:web01"}}, nil, time.Time{},
		map[connKey]*fleet.Facts{{"A", 1}: f})
	evs := rec.events()
	wantEvents(t, rec, "joined web01")
	if !fleet.FactsEqual(evs[0].Facts, f) {
		t.Fatalf("joined facts %+v", evs[0].Facts)
	}
	p.connected(connKey{"A", 2}, "agent:web02")
	wantEvents(t, rec, "joined web02")
	p.resyncIn(nil, p.generation(), map[string]map[uint64]string{"A": {1: "agent:web01", 2: "agent:web02"}}, nil, time.Time{},
		map[connKey]*fleet.Facts{{"A", 2}: f})
	wantEvents(t, rec)
	for _, sv := range p.snapshot().Servers {
		if !fleet.FactsEqual(sv.Facts, f) {
			t.Errorf("%s: facts %+v, want %+v", sv.Machine, sv.Facts, f)
		}
	}
}

// TestFactsRefreshNeedsSameBootTime: an older connection is taken for its
// agent's facts refresh (closed silently) only when the newer one comes
// from the same address with the same boot time and other facts; another
// boot time is another host sharing the key (a duplicate, audited).
func TestFactsRefreshNeedsSameBootTime(t *testing.T) {
	p := newPresence(func(string) map[string]string { return nil }, func(fleet.PresenceEvent) {})
	t0 := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	booted := &fleet.Facts{OS: "linux", PlatformVersion: "12.5", BootTime: t0.Add(-time.Hour)}
	k := connKey{"NA", 1}
	p.connectedWith(k, "agent:web01", t0, booted)
	p.noteIP(k, "192.0.2.1", nil)
	upgraded := *booted
	upgraded.PlatformVersion = "13.0"
	rebooted := upgraded
	rebooted.BootTime = t0.Add(-time.Minute)
	for _, c := range []struct {
		what  string
		ip    string
		facts *fleet.Facts
		want  bool
	}{
		{"other facts, same boot time, same address", "192.0.2.1", &upgraded, true},
		{"other facts and boot time, same address", "192.0.2.1", &rebooted, false},
		{"only another boot time, same address", "192.0.2.1", &fleet.Facts{OS: "linux", PlatformVersion: "12.5", BootTime: t0}, false},
		{"other facts, same boot time, other address", "198.51.100.7", &upgraded, false},
		{"the same facts", "192.0.2.1", booted, false},
		{"no facts", "192.0.2.1", nil, false},
	} {
		if got := p.factsRefresh(k, c.ip, c.facts); got != c.want {
			t.Errorf("%s: refresh %v, want %v", c.what, got, c.want)
		}
	}
}
