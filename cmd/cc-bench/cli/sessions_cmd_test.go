package cli

// The session commands against a plain NATS server (no auth) where a
// fake control service answers the session snapshot and fake sessions
// answer calls, as the contract says they do: the output formats and
// exit codes are proven here; e2e/sessions_bench_test.go runs them
// against the real stack.

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// sessionWorld is a plain server with a fake session service.
type sessionWorld struct {
	url      string
	vars     map[string]string
	sessions []fleet.Session
	nc       *nats.Conn
}

// fixedSession is session n of app at loc, with an id from a fixed key.
func fixedSession(t *testing.T, n byte, app string, loc *fleet.Location) fleet.Session {
	t.Helper()
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, bytes.Repeat([]byte{n}, 32))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return fleet.Session{ID: fleet.SessionID(app, pub), App: app, Admission: fleet.AdmissionPublic, IP: "127.0.0.1",
		Location: loc, Since: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC), Functions: []string{"latencyCheck"},
		Declared: fleet.SessionDeclared{Platform: fleet.PlatformBrowser}}
}

func startSessionWorld(t *testing.T, sessions ...fleet.Session) *sessionWorld {
	t.Helper()
	// The workbench signs a nonce with its key: the server knows the
	// operator's key and the fake service's, nothing else.
	_, opPub := operatorKey(t, 7)
	fakeSeed, fakePub := operatorKey(t, 8)
	fake, _ := nkeys.FromSeed(fakeSeed)
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, NoSystemAccount: true,
		Nkeys: []*server.NkeyUser{{Nkey: opPub}, {Nkey: fakePub}}})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("test server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL(), nats.Nkey(fakePub, fake.Sign))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	w := &sessionWorld{url: srv.ClientURL(), sessions: sessions, nc: nc}
	_, err = nc.Subscribe(fleet.CtlOpWildcard(fleet.OpSessionsSnapshot), func(m *nats.Msg) {
		var q fleet.SessionQuery
		_ = json.Unmarshal(m.Data, &q)
		var sel []fleet.Session
		for _, s := range w.sessions {
			if ok, _ := fleet.MatchSession(&s, q.Where); ok {
				sel = append(sel, s)
			}
		}
		b, _ := json.Marshal(fleet.SessionSnapshot{Seq: 3, Epoch: "e", Sessions: sel, Total: len(sel), Time: time.Now().UTC()})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The server has the subscription before any workbench asks: without
	// this a loaded machine could let the first request find nobody.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	seed, _ := operatorKey(t, 7)
	w.vars = map[string]string{"CC_SERVER": w.url, "CC_KEY": stacktest.WriteSeed(t, "op", seed)}
	return w
}

// serve makes session s answer fn with result, or fail with code.
func (w *sessionWorld) serve(t *testing.T, s fleet.Session, fn string, result any, code int) {
	t.Helper()
	_, err := w.nc.Subscribe(fleet.SessionFnWildcard(s.ID, fn), func(m *nats.Msg) {
		out := &nats.Msg{Subject: m.Reply, Header: nats.Header{}}
		out.Header.Set(fleet.HeaderCallID, m.Header.Get(fleet.HeaderCallID))
		out.Header.Set(fleet.HeaderArgs, fleet.ArgsDigest(m.Data))
		out.Header.Set(fleet.HeaderFunction, fn)
		if code != 0 {
			out.Header.Set(fleet.HeaderErrorCode, "502")
			out.Header.Set(fleet.HeaderError, "fetch failed")
		} else {
			var args map[string]any
			_ = json.Unmarshal(m.Data, &args)
			out.Data, _ = json.Marshal(map[string]any{"url": args["url"], "median_ms": result})
		}
		_ = w.nc.PublishMsg(out)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

var (
	locNB     = &fleet.Location{City: "New Brunswick", Region: "New Jersey", Country: "United States", CountryCode: "US", Source: fleet.LocationFromSites}
	locNewark = &fleet.Location{City: "Newark", Region: "New Jersey", Country: "United States", CountryCode: "US", Source: fleet.LocationFromSites}
)

func TestSessionsCommands(t *testing.T) {
	a := fixedSession(t, 11, "shop", locNB)
	b := fixedSession(t, 12, "shop", locNB)
	c := fixedSession(t, 13, "shop", locNewark)
	c.Admission, c.User = fleet.AdmissionSigned, "alice"
	w := startSessionWorld(t, a, b, c)
	w.serve(t, a, "latencyCheck", 12, 0)
	w.serve(t, b, "latencyCheck", 0, 502)
	w.serve(t, c, "latencyCheck", 40, 0)

	stdout, stderr, code := cc(t, w.vars, "sessions")
	if code != exitOK {
		t.Fatalf("sessions: exit %d, %s", code, stderr)
	}
	golden(t, "sessions", stdout)
	stdout, _, code = cc(t, w.vars, "sessions", "--where", `city="New Brunswick",region="New Jersey"`, "--json")
	if objs := jsonObjects(t, stdout); code != exitOK || len(objs) != 2 {
		t.Errorf("sessions --where --json: exit %d, %q", code, stdout)
	}
	for _, args := range [][]string{{"sessions", "--where", "city=Atlantis"}, {"sessions", "--where", "city=Atlantis", "--json"}} {
		stdout, stderr, code = cc(t, w.vars, args...)
		if code != exitFailure || stdout != "" || !strings.Contains(stderr, "no ONLINE session matches city=Atlantis; see which are with: cc-bench sessions") {
			t.Errorf("no match %q: exit %d, %q", args, code, stderr)
		}
	}

	// b fails: exit 1, as a machine call where one failed.
	stdout, stderr, code = cc(t, w.vars, "call", "latencyCheck", "--sessions", "--where", "city=New Brunswick,region=New Jersey", "--arg", "url=https://example.test/")
	if code != exitFailure {
		t.Errorf("call --sessions: exit %d, %s", code, stderr)
	}
	golden(t, "call_sessions", stdout)
	stdout, _, code = cc(t, w.vars, "call", "latencyCheck", "--sessions", "--app", "shop", "--where", "city=newark", "--arg", "url=u", "--json")
	objs := jsonObjects(t, stdout)
	if code != exitOK || len(objs) != 1 || objs[0]["session"] != c.ID || objs[0]["app"] != "shop" || objs[0]["status"] != "ok" ||
		objs[0]["machine"] != nil || objs[0]["location"].(map[string]any)["city"] != "Newark" {
		t.Errorf("call --sessions --json: exit %d, %q", code, stdout)
	}
	_, stderr, code = cc(t, w.vars, "call", "latencyCheck", "--sessions", "--where", "city=Atlantis")
	if code != exitFailure || !strings.Contains(stderr, "call latencyCheck: no ONLINE session matches city=Atlantis; see which are with: cc-bench sessions") {
		t.Errorf("call nobody: exit %d, %q", code, stderr)
	}
}

func TestWatchSessionsCommand(t *testing.T) {
	a := fixedSession(t, 11, "shop", locNB)
	b := fixedSession(t, 12, "shop", locNewark)
	w := startSessionWorld(t, a)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &stacktest.Buffer{}
	done := make(chan int, 1)
	go func() {
		_, _, code := ccCtx(ctx, t, w.vars, out, "watch", "--sessions", "--json")
		done <- code
	}()
	waitFor(t, out, `"event":"synced"`)
	for i, ev := range []struct {
		name string
		s    fleet.Session
	}{{fleet.EventJoined, b}, {fleet.EventLeft, a}} {
		data, _ := json.Marshal(fleet.SessionEvent{Event: ev.name, Session: ev.s, Seq: uint64(4 + i), Epoch: "e", Time: time.Now().UTC()})
		if err := w.nc.Publish(fleet.SessionEventSubject(ev.name, ev.s.ID), data); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, out, `"event":"left"`)
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("watch --sessions ended with %d", code)
	}
	golden(t, "watch_sessions_json", out.String())
}

// fakeApps answers the apps control API for the operator: add returns a
// signed app with a real account seed, ls the apps added, rm a count.
func (w *sessionWorld) fakeApps(t *testing.T) {
	t.Helper()
	_, opPub := operatorKey(t, 7)
	var apps []fleet.App
	_, err := w.nc.Subscribe(fleet.CtlSubject(opPub, "apps.*"), func(m *nats.Msg) {
		var req fleet.AppRequest
		_ = json.Unmarshal(m.Data, &req)
		var reply any
		switch strings.TrimPrefix(m.Subject, fleet.CtlSubject(opPub, "")) {
		case fleet.OpAppsAdd:
			a := fleet.App{Name: req.Name, Functions: req.Functions, Admission: fleet.AdmissionSigned, MaxSessions: req.MaxSessions, Origins: req.Origins}
			created := fleet.AppCreated{}
			if req.Public {
				a.Admission = fleet.AdmissionPublic
			} else {
				kp, _ := nkeys.CreateAccount()
				seed, _ := kp.Seed()
				a.Key, _ = kp.PublicKey()
				created.Seed = string(seed)
			}
			created.App = a
			apps = append(apps, a)
			reply = created
		case fleet.OpAppsList:
			reply = map[string]any{"apps": apps}
		case fleet.OpAppsRemove:
			reply = fleet.AppRemoved{Name: req.Name, Closed: 2}
		}
		b, _ := json.Marshal(reply)
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestAppsCommands: a signed app's seed goes to --key-out (mode 0600),
// never to the output, and signs a token the app's public key verifies;
// without --key-out it is printed once with a warning; ls and rm.
func TestAppsCommands(t *testing.T) {
	w := startSessionWorld(t)
	w.fakeApps(t)
	keyOut := t.TempDir() + "/shop-app.nk"
	stdout, stderr, code := cc(t, w.vars, "apps", "add", "shop", "--functions", "latencyCheck, ping", "--key-out", keyOut, "--origins", "https://shop.example.com")
	if code != exitOK || strings.Contains(stdout+stderr, "signing key (seed)") {
		t.Fatalf("apps add --key-out: exit %d, %q %q", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "app shop (signed): functions latencyCheck,ping") || !strings.Contains(stderr, "is in "+keyOut+" (mode 0600)") {
		t.Errorf("apps add --key-out said %q / %q", stdout, stderr)
	}
	fi, err := os.Stat(keyOut)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v, %v; want mode 0600", fi, err)
	}
	seed, _ := os.ReadFile(keyOut)
	if strings.Contains(stdout+stderr, strings.TrimSpace(string(seed))) {
		t.Errorf("the seed written to --key-out was also printed")
	}
	tok, stderr, code := cc(t, nil, "apps", "token", "shop", "--key", keyOut, "--user", "alice")
	pubLine := stdout[strings.Index(stdout, "public key ")+len("public key "):]
	if _, err := fleet.ParseSessionToken(strings.TrimSpace(tok), strings.TrimSpace(pubLine), now()); code != exitOK || err != nil {
		t.Errorf("token from the written key: exit %d %s, verify: %v", code, stderr, err)
	}
	// The same file again: refused before the app is created.
	_, stderr, code = cc(t, w.vars, "apps", "add", "shop2", "--functions", "f", "--key-out", keyOut)
	if code != exitUsage || !strings.Contains(stderr, "exists already") {
		t.Errorf("existing --key-out: exit %d, %q", code, stderr)
	}

	stdout, stderr, code = cc(t, w.vars, "apps", "add", "game", "--functions", "latencyCheck")
	if code != exitOK || !strings.Contains(stdout, "signing key (seed): SA") || !strings.Contains(stderr, "WARNING: this is the app's signing key, shown this once") {
		t.Errorf("apps add without --key-out: exit %d, %q / %q", code, stdout, stderr)
	}
	_, _, code = cc(t, w.vars, "apps", "add", "demo", "--functions", "latencyCheck", "--public", "--max-sessions", "500")
	if code != exitOK {
		t.Errorf("apps add --public: exit %d", code)
	}
	stdout, _, code = cc(t, w.vars, "apps", "ls")
	if code != exitOK {
		t.Errorf("apps ls: exit %d", code)
	}
	golden(t, "apps", stdout)
	stdout, _, code = cc(t, w.vars, "apps", "rm", "demo")
	if code != exitOK || stdout != "removed app demo (closed 2 sessions)\n" {
		t.Errorf("apps rm: exit %d, %q", code, stdout)
	}
}
