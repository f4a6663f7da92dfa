package controlsvc

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// sessionRecorder records session events.
type sessionRecorder struct {
	mu  sync.Mutex
	evs []fleet.SessionEvent
}

func (r *sessionRecorder) emit(ev fleet.SessionEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
}

// take returns the events since the last take.
func (r *sessionRecorder) take() []fleet.SessionEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.evs
	r.evs = nil
	return out
}

// wantSessionEvents checks the events since the last take, as
// "event id" strings, and returns them.
func wantSessionEvents(t *testing.T, rec *sessionRecorder, want ...string) []fleet.SessionEvent {
	t.Helper()
	evs := rec.take()
	var got []string
	for _, e := range evs {
		got = append(got, e.Event+" "+e.Session.ID)
	}
	if len(got) != len(want) {
		t.Fatalf("session events: got %q, want %q", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("session events: got %q, want %q", got, want)
		}
	}
	return evs
}

// sessionEventMsg is a broker connect/disconnect event of a session's
// connection, from host, with the JWT tags the callout gives it.
func sessionEventMsg(t *testing.T, subject, serverID string, cid uint64, id, app, host, reason string) *nats.Msg {
	t.Helper()
	var ev connEvent
	ev.Server.ID = serverID
	ev.Client.ID = cid
	ev.Client.User = sessionUserPrefix + id
	ev.Client.Host = host
	ev.Client.Tags = []string{sessionAppTagPrefix + app}
	ev.Reason = reason
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Subject: subject, Data: b}
}

func newTestClock() *testClock { return &testClock{at: time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)} }

// testLocate places 192.0.2.x in Paris and 198.51.100.x in Lyon.
func testLocate(ip string) *fleet.Location {
	switch {
	case len(ip) > 8 && ip[:8] == "192.0.2.":
		return &fleet.Location{City: "Paris", CountryCode: "FR", Source: fleet.LocationFromGeoIP}
	case len(ip) > 11 && ip[:11] == "198.51.100.":
		return &fleet.Location{City: "Lyon", CountryCode: "FR", Source: fleet.LocationFromSites, Site: "lyon-office"}
	}
	return nil
}

// sessionTracker is a presence tracker with its machines' and sessions'
// presence, recording both kinds of events, and the connections it
// closed.
type sessionTracker struct {
	tr       *presenceTracker
	machines *recorder
	sessions *sessionRecorder
	clock    *testClock
	mu       sync.Mutex
	kicked   []connKey
}

func newSessionTracker(t *testing.T, machines ...string) *sessionTracker {
	t.Helper()
	st := &sessionTracker{machines: &recorder{}, sessions: &sessionRecorder{}, clock: newTestClock()}
	st.tr = &presenceTracker{log: slog.New(slog.DiscardHandler), reg: registryWith(t, machines, []string{"alice"}), now: st.clock.now, locate: testLocate}
	st.tr.state = newPresence(func(string) map[string]string { return nil }, st.machines.emit)
	st.tr.state.now = st.clock.now
	st.tr.sessions = newSessionPresence(st.clock.now, st.sessions.emit)
	st.tr.sessions.locate = testLocate
	st.tr.sessions.kick = func(_ context.Context, conns []connKey) int {
		st.mu.Lock()
		defer st.mu.Unlock()
		st.kicked = append(st.kicked, conns...)
		return len(conns)
	}
	return st
}

func (st *sessionTracker) takeKicked() []connKey {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := st.kicked
	st.kicked = nil
	return out
}

var (
	sidA = fleet.SessionID("demo", "UAKEY")
	sidB = fleet.SessionID("demo", "UBKEY")
	sidC = fleet.SessionID("shop", "UCKEY")
)

// demoSession is what the callout would hand admitted for session id of
// app, connecting from ip.
func demoSession(id, app, ip string) fleet.Session {
	return fleet.Session{ID: id, App: app, Admission: fleet.AdmissionSigned, User: "user-" + id[2:6], IP: ip,
		Functions: []string{"latencyCheck"}, Declared: fleet.SessionDeclared{Platform: fleet.PlatformBrowser, UserAgent: "Firefox/140"}}
}

// Sessions join and leave with events of their own: numbered with their
// own seq and epoch, on their own subjects, with the attributes the
// callout admitted them with; the machines' presence and events see none
// of them, and machines' events do not move the sessions' seq.
func TestSessionJoinLeaveOwnSequence(t *testing.T) {
	st := newSessionTracker(t, "web01")
	tr := st.tr
	tr.sessions.admitted(demoSession(sidA, "demo", "192.0.2.7"))
	tr.handleEvent(eventMsg(t, connectSubject, "NA", 1, "agent:web01", ""))
	tr.handleEvent(sessionEventMsg(t, connectSubject, "NA", 2, sidA, "demo", "192.0.2.7", ""))
	tr.handleEvent(sessionEventMsg(t, connectSubject, "NA", 3, sidB, "demo", "198.51.100.9", ""))
	evs := wantSessionEvents(t, st.sessions, "joined "+sidA, "joined "+sidB)
	wantEvents(t, st.machines, "joined web01")
	if evs[0].Seq != 1 || evs[1].Seq != 2 {
		t.Errorf("session seqs %d, %d: want 1, 2 (their own numbering)", evs[0].Seq, evs[1].Seq)
	}
	if evs[0].Epoch == "" || evs[0].Epoch == tr.state.epoch {
		t.Errorf("session epoch %q: want one of its own, not the machines' %q", evs[0].Epoch, tr.state.epoch)
	}
	a := evs[0].Session
	if a.App != "demo" || a.User == "" || a.Declared.UserAgent != "Firefox/140" || a.IP != "192.0.2.7" ||
		a.Location == nil || a.Location.City != "Paris" || !a.Since.Equal(st.clock.now()) {
		t.Errorf("admitted session's attributes: %+v", a)
	}
	// B was not admitted through this service run: ONLINE with what is
	// known for sure.
	b := evs[1].Session
	if b.App != "demo" || b.IP != "198.51.100.9" || b.Location == nil || b.Location.City != "Lyon" || b.Declared.UserAgent != "" || b.User != "" {
		t.Errorf("unknown session's attributes: %+v", b)
	}
	if tr.state.count() != 1 || len(tr.state.connsOf(sessionUserPrefix+sidA)) != 0 {
		t.Errorf("machines' presence holds %d machines and %d connections of a session; want 1 and 0",
			tr.state.count(), len(tr.state.connsOf(sessionUserPrefix+sidA)))
	}

	tr.handleEvent(eventMsg(t, disconnectSubject, "NA", 1, "agent:web01", "Client Closed"))
	tr.handleEvent(sessionEventMsg(t, disconnectSubject, "NA", 2, sidA, "demo", "192.0.2.7", "Client Closed"))
	evs = wantSessionEvents(t, st.sessions, "left "+sidA)
	wantEvents(t, st.machines, "left web01")
	if evs[0].Seq != 3 || evs[0].Reason != "Client Closed" {
		t.Errorf("left: seq %d reason %q, want 3, Client Closed", evs[0].Seq, evs[0].Reason)
	}
	// A broker shutting down takes its sessions with it.
	tr.handleEvent(&nats.Msg{Subject: "$SYS.SERVER.NA.SHUTDOWN"})
	wantSessionEvents(t, st.sessions, "left "+sidB)
	if tr.sessions.count() != 0 {
		t.Errorf("%d sessions ONLINE, want 0", tr.sessions.count())
	}
}

// A remote site's claim of a session connection is not believed:
// sessions are admitted at the hub only.
func TestSessionEventOfSiteIgnored(t *testing.T) {
	st := newSessionTracker(t)
	m := sessionEventMsg(t, connectSubject, "NS", 1, sidA, "demo", "192.0.2.7", "")
	m.Subject = fleet.SiteSysSubject("paris", connectSubject)
	st.tr.handleEvent(m)
	wantSessionEvents(t, st.sessions)
	wantEvents(t, st.machines)
}

// What the callout admitted waits for the connection at most
// sessionPendingTTL of the service's clock; the cap's count includes
// sessions admitted and not yet connected, once.
func TestSessionAdmittedExpiresAndCounts(t *testing.T) {
	st := newSessionTracker(t)
	p := st.tr.sessions
	p.admitted(demoSession(sidA, "demo", "192.0.2.7"))
	p.admitted(demoSession(sidA, "demo", "192.0.2.7")) // the same session twice: one
	p.admitted(demoSession(sidB, "demo", "192.0.2.8"))
	p.admitted(demoSession(sidC, "shop", "192.0.2.9"))
	if n := p.onlineOf("demo"); n != 2 {
		t.Fatalf("onlineOf(demo) = %d with two admitted, want 2", n)
	}
	if n := p.connectedOf("demo"); n != 0 {
		t.Fatalf("connectedOf(demo) = %d, want 0", n)
	}
	st.tr.handleEvent(sessionEventMsg(t, connectSubject, "NA", 1, sidA, "demo", "192.0.2.7", ""))
	if n, c := p.onlineOf("demo"), p.connectedOf("demo"); n != 2 || c != 1 {
		t.Fatalf("after A connected: onlineOf %d connectedOf %d, want 2 and 1", n, c)
	}
	st.clock.add(sessionPendingTTL + time.Second)
	if n := p.onlineOf("demo"); n != 1 {
		t.Fatalf("onlineOf(demo) = %d after B's admission expired, want 1", n)
	}
	// B connects late: ONLINE, but its admitted attributes are gone.
	st.tr.handleEvent(sessionEventMsg(t, connectSubject, "NA", 2, sidB, "demo", "192.0.2.8", ""))
	evs := wantSessionEvents(t, st.sessions, "joined "+sidA, "joined "+sidB)
	if evs[1].Session.Declared.UserAgent != "" || evs[1].Session.IP != "192.0.2.8" {
		t.Errorf("late session kept expired attributes: %+v", evs[1].Session)
	}
	p.mu.Lock()
	pending, queued := len(p.pending), len(p.pendingQ)
	p.mu.Unlock()
	if pending != 0 || queued > 1 {
		t.Errorf("after expiry: %d pending, %d queued; want 0 and at most 1", pending, queued)
	}

	// The pending map is capped: past it the oldest go first.
	defer func(n int) { maxPendingSessions = n }(maxPendingSessions)
	maxPendingSessions = 3
	var ids []string
	for i := range 5 {
		id := fleet.SessionID("many", "UKEY"+string(rune('A'+i)))
		ids = append(ids, id)
		p.admitted(demoSession(id, "many", "192.0.2.1"))
	}
	p.mu.Lock()
	pending = len(p.pending)
	_, oldest := p.pending[ids[0]]
	_, newest := p.pending[ids[4]]
	p.mu.Unlock()
	if pending != 3 || oldest || !newest {
		t.Errorf("capped at 3: %d pending, oldest kept %v, newest kept %v", pending, oldest, newest)
	}
	if n := p.onlineOf("many"); n != 3 {
		t.Errorf("onlineOf(many) = %d, want 3", n)
	}
	// Admitted with a malformed id: nothing kept.
	p.admitted(fleet.Session{ID: "web01", App: "demo"})
	if n := p.onlineOf("demo"); n != 2 {
		t.Errorf("onlineOf(demo) = %d after a malformed admission, want 2", n)
	}
}

// One session id, one connection: a newer connection supersedes the
// older one, which is closed; the session stays ONLINE without a second
// joined, and the older connection's disconnect does not make it leave.
func TestSessionSupersededConnection(t *testing.T) {
	st := newSessionTracker(t)
	tr := st.tr
	tr.sessions.admitted(demoSession(sidA, "demo", "192.0.2.7"))
	tr.handleEvent(sessionEventMsg(t, connectSubject, "NA", 1, sidA, "demo", "192.0.2.7", ""))
	since := st.clock.now()
	st.clock.add(time.Minute)
	tr.handleEvent(sessionEventMsg(t, connectSubject, "NB", 9, sidA, "demo", "198.51.100.4", ""))
	wantSessionEvents(t, st.sessions, "joined "+sidA)
	waitFor(t, "the older connection closed", 5*time.Second, func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.kicked) == 1
	})
	if k := st.takeKicked(); k[0] != (connKey{"NA", 1}) {
		t.Fatalf("closed %v, want the older connection NA/1", k)
	}
	sessions, _, _, _ := tr.sessions.snapshot()
	if len(sessions) != 1 || sessions[0].IP != "198.51.100.4" || !sessions[0].Since.Equal(since) {
		t.Fatalf("after supersede: %+v; want one session at the newer address, ONLINE since its first connection", sessions)
	}
	tr.handleEvent(sessionEventMsg(t, disconnectSubject, "NA", 1, sidA, "demo", "192.0.2.7", "Kicked"))
	wantSessionEvents(t, st.sessions)
	if !tr.sessions.isOnline(sidA) {
		t.Fatal("the older connection's disconnect took the session OFFLINE")
	}
	tr.handleEvent(sessionEventMsg(t, disconnectSubject, "NB", 9, sidA, "demo", "198.51.100.4", "Client Closed"))
	wantSessionEvents(t, st.sessions, "left "+sidA)
}

// closeApp closes every connection of the app's sessions through the
// tracker's kick, at once: they leave, the others stay, and the
// disconnect events that follow change nothing.
func TestSessionCloseAppKicks(t *testing.T) {
	st := newSessionTracker(t)
	tr := st.tr
	tr.handleEvent(sessionEventMsg(t, connectSubject, "NA", 1, sidA, "demo", "192.0.2.7", ""))
	tr.handleEvent(sessionEventMsg(t, connectSubject, "NB", 2, sidB, "demo", "192.0.2.8", ""))
	tr.handleEvent(sessionEventMsg(t, connectSubject, "NA", 3, sidC, "shop", "192.0.2.9", ""))
	tr.sessions.admitted(demoSession(fleet.SessionID("demo", "ULATE"), "demo", "192.0.2.10"))
	wantSessionEvents(t, st.sessions, "joined "+sidA, "joined "+sidB, "joined "+sidC)
	if n := tr.sessions.closeApp(context.Background(), "Demo"); n != 2 {
		t.Fatalf("closeApp closed %d sessions, want 2", n)
	}
	kicked := map[connKey]bool{}
	for _, k := range st.takeKicked() {
		kicked[k] = true
	}
	if len(kicked) != 2 || !kicked[connKey{"NA", 1}] || !kicked[connKey{"NB", 2}] {
		t.Fatalf("kicked %v, want NA/1 and NB/2", kicked)
	}
	evs := st.sessions.take()
	if len(evs) != 2 || evs[0].Event != fleet.EventLeft || evs[1].Event != fleet.EventLeft || evs[0].Reason != "app Demo was removed" {
		t.Fatalf("events %+v, want two left for the app's removal", evs)
	}
	if tr.sessions.onlineOf("demo") != 0 || tr.sessions.onlineOf("shop") != 1 {
		t.Errorf("onlineOf demo %d shop %d, want 0 and 1", tr.sessions.onlineOf("demo"), tr.sessions.onlineOf("shop"))
	}
	tr.handleEvent(sessionEventMsg(t, disconnectSubject, "NA", 1, sidA, "demo", "192.0.2.7", "Kicked"))
	wantSessionEvents(t, st.sessions)
}

// A session's connect event that arrives after its app was removed (the
// removal's closeApp could not see it yet) does not put it ONLINE, and
// its connection is closed.
func TestSessionConnectOfRemovedAppClosed(t *testing.T) {
	st := newSessionTracker(t)
	apps := map[string]bool{"demo": true}
	st.tr.sessions.appOf = func(name string) (fleet.App, bool) {
		return fleet.App{Name: name, Admission: fleet.AdmissionPublic, Functions: []string{"latencyCheck"}}, apps[name]
	}
	st.tr.handleEvent(sessionEventMsg(t, connectSubject, "NA", 1, sidA, "demo", "192.0.2.7", ""))
	evs := wantSessionEvents(t, st.sessions, "joined "+sidA)
	if evs[0].Session.Admission != fleet.AdmissionPublic || len(evs[0].Session.Functions) != 1 {
		t.Errorf("unknown session of a known app: %+v, want the app's admission and functions", evs[0].Session)
	}
	st.tr.handleEvent(sessionEventMsg(t, connectSubject, "NA", 2, sidC, "shop", "192.0.2.9", ""))
	wantSessionEvents(t, st.sessions)
	waitFor(t, "the connection of a removed app closed", 5*time.Second, func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.kicked) == 1
	})
}

// The resync finds sessions whose events were missed (a restart of the
// control service): ONLINE with what CONNZ says (id, app tag, address);
// and drops those CONNZ no longer lists, but not one newer than the
// snapshot nor one a disconnect event closed just before it.
func TestSessionResync(t *testing.T) {
	st := newSessionTracker(t)
	p := st.tr.sessions
	p.connected(connKey{"NA", 1}, sessionConnInfo{id: sidA, ip: "192.0.2.7", tags: []string{"app:demo"}})
	gen := p.generation()
	p.connected(connKey{"NA", 5}, sessionConnInfo{id: sidC, ip: "192.0.2.9", tags: []string{"app:shop"}})
	p.disconnected(connKey{"NA", 7}, "Client Closed")
	wantSessionEvents(t, st.sessions, "joined "+sidA, "joined "+sidC)
	snap := map[string]map[uint64]sessionConnInfo{"NA": {
		2: {id: sidB, ip: "198.51.100.3", tags: []string{"app:demo"}},
		7: {id: fleet.SessionID("demo", "UGONE"), ip: "192.0.2.1", tags: []string{"app:demo"}},
	}}
	closeConns := p.resync(gen, snap, map[string]bool{"NA": true}, st.clock.now())
	if len(closeConns) != 0 {
		t.Errorf("resync closes %v, want nothing", closeConns)
	}
	evs := wantSessionEvents(t, st.sessions, "left "+sidA, "joined "+sidB)
	if evs[0].Reason != "connection gone (found by resync)" {
		t.Errorf("left reason %q", evs[0].Reason)
	}
	if b := evs[1].Session; b.App != "demo" || b.IP != "198.51.100.3" || b.Location == nil || b.Location.Site != "lyon-office" {
		t.Errorf("session found by resync: %+v", b)
	}
	if !p.isOnline(sidC) {
		t.Error("a session newer than the snapshot was dropped")
	}
	// A second connection of an ONLINE session found by resync is
	// closed; the one presence holds stays.
	closeConns = p.resync(p.generation(), map[string]map[uint64]sessionConnInfo{"NA": {
		2: {id: sidB, ip: "198.51.100.3", tags: []string{"app:demo"}},
		3: {id: sidB, ip: "198.51.100.3", tags: []string{"app:demo"}},
		5: {id: sidC, ip: "192.0.2.9", tags: []string{"app:shop"}},
	}}, map[string]bool{"NA": true}, st.clock.now())
	if len(closeConns) != 1 || closeConns[0] != (connKey{"NA", 3}) {
		t.Errorf("resync closes %v, want NA/3", closeConns)
	}
	wantSessionEvents(t, st.sessions)
}

// The machines' snapshot carries each machine's address (its connect
// event's host, or CONNZ's) and where it is (Config.Locate).
func TestMachineSnapshotIPAndLocation(t *testing.T) {
	st := newSessionTracker(t, "web01", "web02")
	tr := st.tr
	m := eventMsg(t, connectSubject, "NA", 1, "agent:web01", "")
	var ev connEvent
	_ = json.Unmarshal(m.Data, &ev)
	ev.Client.Host = "192.0.2.44"
	m.Data, _ = json.Marshal(ev)
	tr.handleEvent(m)
	tr.handleEvent(eventMsg(t, connectSubject, "NA", 2, "agent:web02", ""))
	tr.noteIP(connKey{"NA", 2}, "203.0.113.5") // as a resync's CONNZ reports it
	got := map[string]fleet.Server{}
	for _, sv := range tr.state.snapshot().Servers {
		got[sv.Machine] = sv
	}
	if sv := got["web01"]; sv.IP != "192.0.2.44" || sv.Location == nil || sv.Location.City != "Paris" {
		t.Errorf("web01: %+v, want 192.0.2.44 in Paris", sv)
	}
	if sv := got["web02"]; sv.IP != "203.0.113.5" || sv.Location != nil {
		t.Errorf("web02: %+v, want 203.0.113.5 and no location", sv)
	}
}

// Session events go out through the broker on their own subjects, from
// the announcing user (whom the broker lets publish them): a session
// watcher gets them, numbered, and a machine watcher gets none.
func TestSessionEventsThroughBroker(t *testing.T) {
	s, _ := startSessionTestService(t)
	sessEvents, err := s.fl.SubscribeSync(fleet.SessionEventsWildcard)
	if err != nil {
		t.Fatal(err)
	}
	machineEvents, err := s.fl.SubscribeSync(fleet.PresenceEventsWildcard)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.fl.Flush(); err != nil {
		t.Fatal(err)
	}
	s.presence.sessions.admitted(demoSession(sidA, "demo", "192.0.2.7"))
	s.presence.handleEvent(sessionEventMsg(t, connectSubject, "NTEST", 1, sidA, "demo", "192.0.2.7", ""))
	s.presence.handleEvent(sessionEventMsg(t, disconnectSubject, "NTEST", 1, sidA, "demo", "192.0.2.7", "Client Closed"))
	for i, want := range []string{fleet.EventJoined, fleet.EventLeft} {
		m, err := sessEvents.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("session event %d: %v", i+1, err)
		}
		var ev fleet.SessionEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if m.Subject != fleet.SessionEventSubject(want, sidA) || ev.Event != want || ev.Seq != uint64(i+1) || ev.Session.ID != sidA {
			t.Fatalf("event %d on %s: %+v, want %s of %s with seq %d", i+1, m.Subject, ev, want, sidA, i+1)
		}
	}
	// The machine watcher's subscription saw nothing: flushed after the
	// session events arrived, anything published before them is in.
	if err := s.fl.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := machineEvents.Pending(); n != 0 {
		m, _ := machineEvents.NextMsg(0)
		t.Fatalf("a machine watcher got %d events: first on %s", n, m.Subject)
	}
}

// CONNZ, as the resync reads it from a real broker, carries each
// connection's address (the machines' snapshot and the sessions found by
// a resync take it from there).
//
// The service's own connections to its embedded broker are in process (no
// address); one over TCP, as the FLEET user, has its address.
func TestConnzCarriesAddress(t *testing.T) {
	s, ctx := startSessionTestService(t)
	pub, _ := s.keys.Fleet.PublicKey()
	nc, err := nats.Connect(s.ClientURL(), nats.Nkey(pub, s.keys.Fleet.Sign))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cid, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.presence.serverConnzInfo(ctx, s.broker.ID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := info[cid]
	if !ok {
		t.Fatalf("CONNZ did not list the TCP connection %d: %v", cid, info)
	}
	if c.ip != "127.0.0.1" {
		t.Errorf("connection %d (%s): ip %q, want 127.0.0.1", cid, c.user, c.ip)
	}
}

// Before a resync drops a session connection its CONNZ pages did not
// list, the broker is asked about that connection: one it no longer has
// goes, one that cannot be checked stays.
func TestSessionResyncConfirmsMissing(t *testing.T) {
	s, ctx := startSessionTestService(t)
	p := s.presence.sessions
	gone, unsure := connKey{s.broker.ID(), 999999}, connKey{"NOSUCHSERVER", 1}
	p.connected(gone, sessionConnInfo{id: sidA, tags: []string{"app:demo"}})
	p.connected(unsure, sessionConnInfo{id: sidB, tags: []string{"app:demo"}})
	snap := map[string]map[uint64]sessionConnInfo{gone.server: {}, unsure.server: {}}
	s.presence.confirmMissingSessions(ctx, p.generation(), snap)
	if _, kept := snap[gone.server][gone.cid]; kept {
		t.Error("a connection the broker does not have was put back")
	}
	if c, kept := snap[unsure.server][unsure.cid]; !kept || c.id != sidB {
		t.Error("a connection that could not be checked was not kept")
	}
	p.resync(p.generation(), snap, map[string]bool{gone.server: true, unsure.server: true}, time.Time{})
	if p.isOnline(sidA) || !p.isOnline(sidB) {
		t.Errorf("after resync: A online %v (want false), B online %v (want true)", p.isOnline(sidA), p.isOnline(sidB))
	}
}

// startSessionTestService is startTestService with the apps these tests'
// sessions belong to registered (a session of an app not registered is
// closed as soon as it connects).
func startSessionTestService(t *testing.T) (*Service, context.Context) {
	t.Helper()
	s, ctx := startTestService(t)
	for _, app := range []string{"demo", "shop", "many", "speedtest"} {
		if _, err := s.reg.AddApp(fleet.AppRequest{Name: app, Functions: []string{"latencyCheck"}, Public: true}, "test"); err != nil {
			t.Fatal(err)
		}
	}
	return s, ctx
}

// TestSessionCountsPerAddress: presence counts an app's sessions per
// source address as the per-address rate keys it (an IPv4 address, an
// IPv6 /64), those admitted and not yet connected included, until they
// leave or their admission expires; a connection reported from another
// address moves the session's count there.
func TestSessionCountsPerAddress(t *testing.T) {
	st := newSessionTracker(t)
	p := st.tr.sessions
	sidD := fleet.SessionID("demo", "UDKEY")
	p.admitted(demoSession(sidA, "demo", "2001:db8:1:2::1"))
	p.admitted(demoSession(sidB, "demo", "2001:db8:1:2::ffff")) // the same /64
	p.admitted(demoSession(sidD, "demo", "192.0.2.7"))
	p.admitted(demoSession(sidC, "shop", "2001:db8:1:2::1")) // another app
	if n := p.onlineFrom("demo", "2001:db8:1:2::beef"); n != 2 {
		t.Fatalf("onlineFrom(demo, the /64) = %d with two admitted from it, want 2", n)
	}
	if n := p.onlineFrom("DEMO", "::ffff:192.0.2.7"); n != 1 {
		t.Fatalf("onlineFrom(DEMO, IPv4-mapped 192.0.2.7) = %d, want 1", n)
	}
	if n := p.onlineFrom("demo", "2001:db8:1:3::1"); n != 0 {
		t.Fatalf("onlineFrom(demo, another /64) = %d, want 0", n)
	}
	// A connects: still counted once. B's connection comes from another
	// address than it was admitted from: counted there.
	st.tr.handleEvent(sessionEventMsg(t, connectSubject, "NA", 1, sidA, "demo", "2001:db8:1:2::1", ""))
	st.tr.handleEvent(sessionEventMsg(t, connectSubject, "NA", 2, sidB, "demo", "198.51.100.4", ""))
	if n, m := p.onlineFrom("demo", "2001:db8:1:2::1"), p.onlineFrom("demo", "198.51.100.4"); n != 1 || m != 1 {
		t.Fatalf("after A and B connected: %d from the /64, %d from 198.51.100.4; want 1 and 1", n, m)
	}
	// D never connects: its admission expires.
	st.clock.add(sessionPendingTTL + time.Second)
	if n := p.onlineFrom("demo", "192.0.2.7"); n != 0 {
		t.Fatalf("onlineFrom(demo, 192.0.2.7) = %d after D's admission expired, want 0", n)
	}
	st.tr.handleEvent(sessionEventMsg(t, disconnectSubject, "NA", 1, sidA, "demo", "2001:db8:1:2::1", "Client Closed"))
	if n := p.onlineFrom("demo", "2001:db8:1:2::1"); n != 0 {
		t.Fatalf("onlineFrom(demo, the /64) = %d after A left, want 0", n)
	}
	p.closeApp(context.Background(), "demo")
	p.mu.Lock()
	left := len(p.fromAddr)
	p.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d address counts left after every session left or expired, want none", left)
	}
}
