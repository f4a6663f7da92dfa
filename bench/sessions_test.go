package bench_test

// These tests prove the session side of the SDK (listing, calling,
// watching sessions) against a plain in-process NATS server without
// auth: a fake control service answers the session snapshot as the
// contract says (on the asker's ctl.<key>.sessions.snapshot, in parts),
// and fake sessions answer on their own subjects (fleet.SessionFnWildcard) the way
// the JavaScript library does. The real control service side (admission,
// presence) is proven end to end in e2e/sessions_bench_test.go.

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// plainServer starts a NATS server on loopback, no auth.
func plainServer(t *testing.T) string {
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
	return srv.ClientURL()
}

func dialPlain(t *testing.T, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.Timeout(5 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// operatorClient is a bench client on url with a fresh operator key and
// that key's inbox prefix, as Connect would make it.
func operatorClient(t *testing.T, url string) *bench.Client {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return bench.NewClient(dialPlain(t, url, nats.CustomInboxPrefix(fleet.ControlInbox(pub))), pub)
}

// sessionSeen is a session of app at location, with a session id made
// from a fresh key as the control service would.
func sessionSeen(t *testing.T, app, city, region string) fleet.Session {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return fleet.Session{ID: fleet.SessionID(app, pub), App: app, Admission: fleet.AdmissionPublic, IP: "127.0.0.1",
		Location: &fleet.Location{City: city, Region: region, Country: "United States", Source: fleet.LocationFromSites},
		Since:    time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC), Functions: []string{"latencyCheck"},
		Declared: fleet.SessionDeclared{Platform: fleet.PlatformBrowser}}
}

// fakeSessionService answers session snapshots with sessions, in parts of
// per sessions each. With ignoreWhere it answers every session whatever
// the query (an older service): the client must select them itself.
type fakeSessionService struct {
	mu          sync.Mutex
	sessions    []fleet.Session
	seq         uint64
	epoch       string
	per         int
	ignoreWhere bool
	queries     atomic.Int32
}

func (f *fakeSessionService) start(t *testing.T, nc *nats.Conn) {
	t.Helper()
	_, err := nc.Subscribe(fleet.CtlOpWildcard(fleet.OpSessionsSnapshot), func(m *nats.Msg) {
		f.queries.Add(1)
		// Asked on the asker's own subject, answered into its own
		// control inbox (the service answers nothing else).
		if key, _, err := fleet.ParseCtlSubject(m.Subject); err != nil || !fleet.IsControlReply(m.Reply, key) {
			t.Errorf("session snapshot asked on %s with reply %s: want the asker's own subject and control inbox", m.Subject, m.Reply)
			return
		}
		var q fleet.SessionQuery
		if err := json.Unmarshal(m.Data, &q); err != nil {
			t.Errorf("session query %q: %v", m.Data, err)
			return
		}
		f.mu.Lock()
		var sel []fleet.Session
		for _, s := range f.sessions {
			if ok, _ := fleet.MatchSession(&s, q.Where); ok || f.ignoreWhere {
				sel = append(sel, s)
			}
		}
		seq, epoch, per := f.seq, f.epoch, f.per
		f.mu.Unlock()
		if per <= 0 {
			per = len(sel) + 1
		}
		parts := (len(sel) + per - 1) / per
		if parts == 0 {
			parts = 1
		}
		for p := 0; p < parts; p++ {
			chunk := sel[min(p*per, len(sel)):min((p+1)*per, len(sel))]
			snap := fleet.SessionSnapshot{Seq: seq, Epoch: epoch, Sessions: chunk, Total: len(sel), Time: time.Now().UTC()}
			if parts > 1 {
				snap.Part, snap.Parts = p+1, parts
			}
			b, _ := json.Marshal(snap)
			if err := m.Respond(b); err != nil {
				t.Error(err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// fakeSession answers calls of fn to session s as the session library
// does: on the reply subject, echoing Cc-Call and Cc-Args, with answer's
// result, or an error when answer returns one. calls counts the calls.
type fakeSession struct {
	s     fleet.Session
	calls atomic.Int32
	subj  atomic.Value // the last call's subject
}

func serveSession(t *testing.T, nc *nats.Conn, s fleet.Session, fn string, answer func(args map[string]any) (any, *fleet.Error)) *fakeSession {
	t.Helper()
	fs := &fakeSession{s: s}
	_, err := nc.Subscribe(fleet.SessionFnWildcard(s.ID, fn), func(m *nats.Msg) {
		fs.calls.Add(1)
		fs.subj.Store(m.Subject)
		if err := fleet.CheckCallID(m.Reply, m.Header.Get(fleet.HeaderCallID)); err != nil {
			t.Errorf("session %s: call id: %v", s.ID, err)
		}
		if answer == nil {
			return // silent
		}
		var args map[string]any
		_ = json.Unmarshal(m.Data, &args)
		out := &nats.Msg{Subject: m.Reply, Header: nats.Header{}}
		out.Header.Set(fleet.HeaderCallID, m.Header.Get(fleet.HeaderCallID))
		out.Header.Set(fleet.HeaderArgs, fleet.ArgsDigest(m.Data))
		v, fe := answer(args)
		if fe != nil {
			out.Header.Set(fleet.HeaderErrorCode, rune2str(fe.Code))
			out.Header.Set(fleet.HeaderError, fe.Description)
		} else {
			out.Data, _ = json.Marshal(v)
		}
		if err := nc.PublishMsg(out); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return fs
}

func rune2str(code int) string { b, _ := json.Marshal(code); return string(b) }

// TestSessionsListSelectsAndGathersParts: the snapshot comes in parts and
// from a service that ignores the query; Sessions returns exactly the
// matching sessions, sorted, and refuses an unknown key before asking.
func TestSessionsListSelectsAndGathersParts(t *testing.T) {
	url := plainServer(t)
	nb1 := sessionSeen(t, "shop", "New Brunswick", "New Jersey")
	nb2 := sessionSeen(t, "shop", "New Brunswick", "New Jersey")
	nwk := sessionSeen(t, "shop", "Newark", "New Jersey")
	other := sessionSeen(t, "game", "New Brunswick", "New Jersey")
	svc := &fakeSessionService{sessions: []fleet.Session{nwk, nb2, other, nb1}, seq: 7, epoch: "e1", per: 1, ignoreWhere: true}
	svc.start(t, dialPlain(t, url))
	c := operatorClient(t, url)

	got, err := c.Sessions(testCtx(t), fleet.SessionQuery{Where: map[string]string{"app": "shop", "city": "new brunswick", "region": "New Jersey"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{nb1.ID, nb2.ID}
	if want[0] > want[1] {
		want[0], want[1] = want[1], want[0]
	}
	var ids []string
	for _, s := range got {
		ids = append(ids, s.ID)
	}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("sessions %q, want %q", ids, want)
	}
	all, err := c.Sessions(testCtx(t), fleet.SessionQuery{})
	if err != nil || len(all) != 4 {
		t.Errorf("all sessions: %d, %v; want 4 (gathered from 4 parts)", len(all), err)
	}

	before := svc.queries.Load()
	_, err = c.Sessions(testCtx(t), fleet.SessionQuery{Where: map[string]string{"planet": "earth"}})
	if err == nil || !strings.Contains(err.Error(), `unknown session attribute "planet"`) || !strings.Contains(err.Error(), "country_code") {
		t.Errorf("unknown key: %v; want an error listing the keys", err)
	}
	if svc.queries.Load() != before {
		t.Errorf("a query with an unknown key was sent to the service")
	}
}

// TestSessionsNoService: nobody answers the session snapshot.
func TestSessionsNoService(t *testing.T) {
	c := operatorClient(t, plainServer(t))
	if _, err := c.Sessions(testCtx(t), fleet.SessionQuery{}); !errors.Is(err, bench.ErrNoService) {
		t.Errorf("got %v, want ErrNoService", err)
	}
}

// TestCallSessionsByLocation: a call to the sessions of one city reaches
// exactly them, each on its own session subject; it reports ok, error and
// no-response per session with its app and location, re-sends to the
// silent one, and ignores an answer under a session it did not call.
func TestCallSessionsByLocation(t *testing.T) {
	url := plainServer(t)
	okS := sessionSeen(t, "shop", "New Brunswick", "New Jersey")
	badS := sessionSeen(t, "shop", "New Brunswick", "New Jersey")
	silentS := sessionSeen(t, "shop", "New Brunswick", "New Jersey")
	gone := sessionSeen(t, "shop", "New Brunswick", "New Jersey") // listed, but nobody subscribes
	nwk := sessionSeen(t, "shop", "Newark", "New Jersey")
	svc := &fakeSessionService{sessions: []fleet.Session{okS, badS, silentS, gone, nwk}, seq: 1, epoch: "e"}
	svc.start(t, dialPlain(t, url))

	snc := dialPlain(t, url)
	fOK := serveSession(t, snc, okS, "latencyCheck", func(args map[string]any) (any, *fleet.Error) {
		return map[string]any{"url": args["url"], "median_ms": 12}, nil
	})
	fBad := serveSession(t, snc, badS, "latencyCheck", func(map[string]any) (any, *fleet.Error) {
		return nil, &fleet.Error{Code: 502, Description: "fetch failed"}
	})
	fSilent := serveSession(t, snc, silentS, "latencyCheck", nil)
	fNwk := serveSession(t, snc, nwk, "latencyCheck", func(map[string]any) (any, *fleet.Error) { return "newark", nil })
	// A rogue answers every call it sees under a session id nobody
	// called (what a session answering for another would send): the
	// call sent it nothing, so its answer counts for nothing.
	rogue := sessionSeen(t, "shop", "Nowhere", "")
	if _, err := snc.Subscribe(fleet.SessionFnWildcard(okS.ID, "latencyCheck"), func(m *nats.Msg) {
		r, err := fleet.ParseCallReply(m.Reply)
		if err != nil {
			t.Error(err)
			return
		}
		// Under a session id and under a machine's token: a machine
		// may publish replies under its own token to any caller.
		for _, tok := range []string{rogue.ID, fleet.MachineToken("10.0.0.9_rogue")} {
			out := &nats.Msg{Subject: fleet.CallReply(r.Caller, tok, r.Call, 0), Header: nats.Header{}, Data: []byte(`"forged"`)}
			out.Header.Set(fleet.HeaderFunction, "latencyCheck")
			_ = snc.PublishMsg(out)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := snc.Flush(); err != nil {
		t.Fatal(err)
	}

	c := operatorClient(t, url)
	q := fleet.SessionQuery{Where: map[string]string{"city": "New Brunswick", "region": "New Jersey"}}
	res, err := c.Call(testCtx(t), "latencyCheck", map[string]any{"url": "https://example.test/"}, bench.CallOptions{Sessions: &q, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Expected != 4 || res.NumOK != 1 || res.NumError != 1 || res.NumUnexpected != 0 || len(res.Unexpected) != 0 {
		t.Errorf("summary %+v; want 4 expected, 1 ok, 1 error, nothing unexpected", res.Summary)
	}
	noResp := []string{silentS.ID, gone.ID}
	if noResp[0] > noResp[1] {
		noResp[0], noResp[1] = noResp[1], noResp[0]
	}
	if !reflect.DeepEqual(res.NoResponse, noResp) {
		t.Errorf("no response %q, want %q", res.NoResponse, noResp)
	}
	for _, r := range res.Replied {
		if r.Machine != "" || r.App != "shop" || r.Location == nil || r.Location.City != "New Brunswick" {
			t.Errorf("reply %+v: want the session's id, app and location, no machine", r)
		}
		switch r.Session {
		case okS.ID:
			if r.Status != bench.StatusOK || !strings.Contains(string(r.Result), `"url":"https://example.test/"`) {
				t.Errorf("ok session: %s %s", r.Status, r.Result)
			}
		case badS.ID:
			if r.Status != bench.StatusError || r.Err == nil || r.Err.Code != 502 || r.Err.Description != "fetch failed" {
				t.Errorf("failing session: %s %v", r.Status, r.Err)
			}
		default:
			t.Errorf("reply from %q, which was not called", r.Session)
		}
	}
	if n := fNwk.calls.Load(); n != 0 {
		t.Errorf("the Newark session was called %d times; the query excludes it", n)
	}
	if fOK.calls.Load() != 1 || fBad.calls.Load() != 1 {
		t.Errorf("answering sessions were called %d and %d times, want once each", fOK.calls.Load(), fBad.calls.Load())
	}
	if n := fSilent.calls.Load(); n < 2 {
		t.Errorf("the silent session was called %d times; want the call re-sent to it", n)
	}
	if got, want := fOK.subj.Load(), fleet.SessionFnSubject(okS.ID, "latencyCheck", c.Key()); got != want {
		t.Errorf("call subject %v, want %s", got, want)
	}
	if res.Resent == 0 {
		t.Errorf("Resent = 0; the silent and the gone session should have been sent the call again")
	}
}

// TestCallSessionsEndsAtLastReply: when every selected session answers,
// the call ends then, not at the deadline; an empty selection ends at
// once with nothing expected.
func TestCallSessionsEndsAtLastReply(t *testing.T) {
	url := plainServer(t)
	var ss []fleet.Session
	snc := dialPlain(t, url)
	for i := 0; i < 5; i++ {
		s := sessionSeen(t, "shop", "New Brunswick", "New Jersey")
		ss = append(ss, s)
		serveSession(t, snc, s, "latencyCheck", func(map[string]any) (any, *fleet.Error) { return 1, nil })
	}
	svc := &fakeSessionService{sessions: ss, seq: 1, epoch: "e", per: 2}
	svc.start(t, dialPlain(t, url))
	c := operatorClient(t, url)
	q := fleet.SessionQuery{Where: map[string]string{"app": "shop"}}
	res, err := c.Call(testCtx(t), "latencyCheck", nil, bench.CallOptions{Sessions: &q, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !res.AllOK() || res.Expected != 5 || res.TimedOut || res.Took > generous {
		t.Errorf("%+v in %v; want 5 ok, ended at the last reply", res.Summary, res.Took)
	}
	none := fleet.SessionQuery{Where: map[string]string{"city": "Atlantis"}}
	res, err = c.Call(testCtx(t), "latencyCheck", nil, bench.CallOptions{Sessions: &none, Timeout: 20 * time.Second})
	if !errors.Is(err, bench.ErrNoMatch) || err.Error() != "call latencyCheck: no ONLINE session matches city=Atlantis" || res.Expected != 0 || res.Took > generous {
		t.Errorf("empty selection: %+v, %v", res, err)
	}
}

// TestCallSessionsRefusesMixedTargets: a call is to sessions or to
// machines, never both.
func TestCallSessionsRefusesMixedTargets(t *testing.T) {
	c := operatorClient(t, plainServer(t))
	sel, _ := bench.ParseSelector("role=web")
	for name, opts := range map[string]bench.CallOptions{
		"selector": {Sessions: &fleet.SessionQuery{}, Where: sel},
		"machines": {Sessions: &fleet.SessionQuery{}, Machines: []string{"10.0.0.1_a"}},
	} {
		if _, err := c.Call(testCtx(t), "latencyCheck", nil, opts); err == nil || !strings.Contains(err.Error(), "session query") {
			t.Errorf("%s: %v; want a refusal", name, err)
		}
	}
	if _, err := c.Call(testCtx(t), "latencyCheck", nil, bench.CallOptions{Sessions: &fleet.SessionQuery{Where: map[string]string{"town": "x"}}}); err == nil || !strings.Contains(err.Error(), "unknown session attribute") {
		t.Errorf("unknown key: %v", err)
	}
}

// TestWatchSessions: present sessions, synced, then live joined and left
// in order; an event from before the snapshot is dropped; a gap in the
// session events' numbers resyncs and reports what changed as found by
// resync. The machine events on their own subject never reach it.
func TestWatchSessions(t *testing.T) {
	url := plainServer(t)
	a := sessionSeen(t, "shop", "New Brunswick", "New Jersey")
	b := sessionSeen(t, "shop", "Newark", "New Jersey")
	cS := sessionSeen(t, "shop", "Newark", "New Jersey")
	d := sessionSeen(t, "shop", "Newark", "New Jersey")
	svc := &fakeSessionService{sessions: []fleet.Session{a, b}, seq: 10, epoch: "e1"}
	pub := dialPlain(t, url)
	svc.start(t, pub)
	c := operatorClient(t, url)
	send := func(event string, s fleet.Session, seq uint64) {
		b, _ := json.Marshal(fleet.SessionEvent{Event: event, Session: s, Seq: seq, Epoch: "e1", Time: time.Now().UTC()})
		if err := pub.Publish(fleet.SessionEventSubject(event, s.ID), b); err != nil {
			t.Error(err)
		}
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	var got []string
	err := c.WatchSessions(ctx, func(ev fleet.SessionEvent) {
		line := ev.Event + " " + ev.Session.ID
		if ev.Reason == bench.FoundByResync {
			line += " (resync)"
		}
		got = append(got, line)
		switch len(got) {
		case 3: // synced: go live
			send(fleet.EventJoined, a, 9) // already in the snapshot: dropped
			mp, _ := json.Marshal(fleet.PresenceEvent{Event: fleet.EventJoined, Machine: "10.0.0.1_x", Seq: 11})
			_ = pub.Publish(fleet.PresenceEventSubject(fleet.EventJoined, "10.0.0.1_x"), mp)
			send(fleet.EventJoined, cS, 11)
			send(fleet.EventLeft, b, 12)
		case 5:
			// Meanwhile d joined and a left, but the watcher sees only
			// event 15: a gap.
			svc.mu.Lock()
			svc.sessions, svc.seq = []fleet.Session{cS, d}, 15
			svc.mu.Unlock()
			send(fleet.EventJoined, d, 15)
		case 9:
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("WatchSessions returned %v", err)
	}
	first := []string{a.ID, b.ID}
	if first[0] > first[1] {
		first[0], first[1] = first[1], first[0]
	}
	want := []string{
		"present " + first[0], "present " + first[1], "synced ",
		"joined " + cS.ID, "left " + b.ID,
		"resync ", "left " + a.ID + " (resync)", "joined " + d.ID + " (resync)", "synced ",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestSessionsDeniedByBroker: an operator the broker does not let ask for
// the session snapshot, or publish session calls (a viewer without the
// sessions permission), gets a 403 that says what is needed, at once
// rather than at the deadline.
func TestSessionsDeniedByBroker(t *testing.T) {
	mk := func() (nkeys.KeyPair, string) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		return kp, pub
	}
	svcKey, svcPub := mk()
	noList, noListPub := mk()
	noCall, noCallPub := mk()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, NoSystemAccount: true,
		Nkeys: []*server.NkeyUser{
			{Nkey: svcPub},
			{Nkey: noListPub, Permissions: &server.Permissions{Publish: &server.SubjectPermission{Deny: []string{fleet.CtlOpWildcard(fleet.OpSessionsSnapshot), fleet.SessionFnRoot + ".>"}}}},
			{Nkey: noCallPub, Permissions: &server.Permissions{Publish: &server.SubjectPermission{Deny: []string{fleet.SessionFnRoot + ".>"}}}},
		}})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("test server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	svc := &fakeSessionService{sessions: []fleet.Session{sessionSeen(t, "shop", "New Brunswick", "New Jersey")}, seq: 1, epoch: "e"}
	svc.start(t, dialPlain(t, srv.ClientURL(), nats.Nkey(svcPub, svcKey.Sign)))
	connect := func(kp nkeys.KeyPair) *bench.Client {
		seed, _ := kp.Seed()
		c, err := bench.Connect(srv.ClientURL(), bench.WithSeed(seed))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	ctx, cancel := context.WithTimeout(testCtx(t), 20*time.Second)
	defer cancel()
	var fe *fleet.Error
	_, err = connect(noList).Sessions(ctx, fleet.SessionQuery{})
	if !errors.As(err, &fe) || fe.Code != fleet.CodeForbidden || !strings.Contains(err.Error(), "--sessions") || ctx.Err() != nil {
		t.Errorf("listing denied: %v; want a 403 naming --sessions before the deadline", err)
	}
	res, err := connect(noCall).Call(ctx, "latencyCheck", nil, bench.CallOptions{Sessions: &fleet.SessionQuery{}, Timeout: 15 * time.Second})
	if !errors.As(err, &fe) || fe.Code != fleet.CodeForbidden || !strings.Contains(err.Error(), "calling sessions needs") || res == nil || res.Took > generous {
		t.Errorf("call denied: %v (%+v); want a 403 at once", err, res)
	}
}
