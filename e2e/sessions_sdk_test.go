package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/nats-io/nuid"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// Sessions in JavaScript: the session library (sdk/js) in Node.js and in
// a real headless Chromium, through the whole stack — the control
// service's embedded broker with its WebSocket listener, the real auth
// callout admitting sessions of apps added by the admin's workbench,
// session presence with locations from a sites-like map, the audit — with
// real nkeys and tokens; a Go operator calls them on
// fleet.SessionFnSubject, and the workbench by location, and checks their
// answers as the workbench and the audit read them.
//
// They need `npm ci` in sdk/js (make test-deps) and, for the browser,
// Debian's chromium; without them they skip, and with CI set they fail.

// sessionStack is what a session test talks to: the whole stack — the
// control service with its embedded broker serving WebSocket, the real
// callout admitting sessions of apps added through the control API,
// session presence placing them by a sites-like map (sitesLocate) — and
// the WebSocket URL sessions join at, an operator connection allowed to
// call sessions (the first admin's), the admin's workbench, and the
// signing seeds of the signed apps.
type sessionStack struct {
	Svc       *controlsvc.Service
	Bench     *bench.Client
	WSURL     string
	Caller    *nats.Conn
	CallerKey string
	// Seeds are the signed apps' seeds (fleet.AppCreated.Seed) by name.
	Seeds map[string]string
	// Keys are the signed apps' public keys by name.
	Keys map[string]string
}

// sitesLocate places loopback addresses as an operator's --sites map
// would: nbAddr in New Brunswick, newarkAddr in Newark (New Jersey).
func sitesLocate(ip string) *fleet.Location {
	switch ip {
	case nbAddr:
		l := newBrunswick
		return &l
	case newarkAddr:
		l := newark
		return &l
	}
	return nil
}

// startSessionStack starts the stack sessions of apps join (each app
// added by the admin's workbench, apps.add).
func startSessionStack(t *testing.T, apps ...fleet.AppRequest) *sessionStack {
	t.Helper()
	return startSessionStackOrigins(t, nil, apps...)
}

// startSessionStackOrigins is startSessionStack with the broker's
// --websocket-origins set to origins (nil: any page may connect).
func startSessionStackOrigins(t *testing.T, origins []string, apps ...fleet.AppRequest) *sessionStack {
	t.Helper()
	svc := stacktest.StartControlWith(t, controlsvc.Config{
		DataDir: t.TempDir(),
		Broker: broker.Config{Listen: "127.0.0.1:0", WebSocketListen: "127.0.0.1:0", WebSocketOrigins: origins,
			PingInterval: time.Second, MaxPingsOut: 2},
		Logger: stacktest.Logger().With("side", "control"),
		Locate: sitesLocate,
	})
	st := &sessionStack{Svc: svc, Bench: adminClient(t, svc), WSURL: svc.Broker().WebSocketURL(),
		Seeds: map[string]string{}, Keys: map[string]string{}}
	for _, q := range apps {
		created, err := st.Bench.AppsAdd(ctxFor(t), q)
		if err != nil {
			t.Fatalf("apps add %s: %v", q.Name, err)
		}
		if !q.Public {
			st.Seeds[q.Name], st.Keys[q.Name] = created.Seed, created.App.Key
		}
	}
	admin := stacktest.LoadKey(t, svc.AdminKeyPath())
	st.Caller = stacktest.Connect(t, svc.ClientURL(), admin, "op-sessions")
	st.CallerKey = stacktest.Pub(t, admin)
	return st
}

// sessionOf waits until the control service lists exactly one session
// of the query q, and ok accepts it; it returns that session.
func (st *sessionStack) sessionOf(t *testing.T, q fleet.SessionQuery, ok func(fleet.Session) bool) fleet.Session {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ss, err := st.Bench.Sessions(ctxFor(t), q)
		if err == nil && len(ss) == 1 && ok(ss[0]) {
			return ss[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions of %v: %+v (%v), want one as wanted", q.Where, ss, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
}

// sessionRefusals returns the reasons of the session connections the
// callout refused, as the audit recorded them.
func (st *sessionStack) sessionRefusals(t *testing.T) []string {
	t.Helper()
	recs, err := st.Bench.Audit(ctxFor(t), time.Time{}, 0)
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	var out []string
	for _, r := range recs {
		if r.Kind == fleet.AuditRefused && strings.HasPrefix(r.Reason, "session: ") {
			out = append(out, r.Reason)
		}
	}
	return out
}

// kick closes the broker connection of session id (user "session:<id>")
// as the broker would on a network failure.
func (st *sessionStack) kick(t *testing.T, id string) {
	t.Helper()
	srv := st.Svc.Broker().Server()
	cz, err := srv.Connz(&server.ConnzOptions{Username: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cz.Conns {
		if c.AuthorizedUser == "session:"+id {
			if err := srv.DisconnectClientByID(c.Cid); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no connection of user session:%s", id)
}

// callSession calls fn on session id as the workbench does: on
// fleet.SessionFnSubject, with the reply subject reply (the call's own,
// fleet.CallReply, when "") and the call id callID. It returns the answer.
func (st *sessionStack) callSession(t *testing.T, id, fn string, body []byte, callID, reply string) *nats.Msg {
	t.Helper()
	m, err := st.trySessionCall(id, fn, body, callID, reply, 20*time.Second)
	if err != nil {
		t.Fatalf("call %s on %s: %v", fn, id, err)
	}
	return m
}

func (st *sessionStack) trySessionCall(id, fn string, body []byte, callID, reply string, timeout time.Duration) (*nats.Msg, error) {
	if callID == "" {
		callID = nuid.Next()
	}
	if reply == "" {
		reply = fleet.CallReply(st.CallerKey, id, callID, 0)
	}
	sub, err := st.Caller.SubscribeSync(reply)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	m := nats.NewMsg(fleet.SessionFnSubject(id, fn, st.CallerKey))
	m.Reply = reply
	m.Data = body
	m.Header.Set(fleet.HeaderCallID, callID)
	if err := st.Caller.PublishMsg(m); err != nil {
		return nil, err
	}
	return sub.NextMsg(timeout)
}

// nodeReady finds node and sdk/js's installed packages, and builds the
// library (tsc) once per test binary; it skips the test without them
// (fails with CI set).
func nodeReady(t *testing.T) (node, dir string) {
	t.Helper()
	dir, _ = filepath.Abs("../sdk/js")
	node, err := exec.LookPath("node")
	if _, serr := os.Stat(filepath.Join(dir, "node_modules", "@nats-io", "nats-core")); err != nil || serr != nil {
		const msg = "node or sdk/js/node_modules is missing: run make test-deps (or cd sdk/js && npm ci)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	sdkBuild.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "node_modules", "typescript", "bin", "tsc"), "-p", dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			sdkBuildErr = fmt.Errorf("build sdk/js (tsc): %v\n%s", err, out)
		}
	})
	if sdkBuildErr != nil {
		t.Fatal(sdkBuildErr)
	}
	return node, dir
}

var (
	sdkBuild    sync.Once
	sdkBuildErr error
)

// jsEvent is one JSON line a test program under sdk/js/e2e printed.
type jsEvent map[string]any

func (e jsEvent) str(k string) string { s, _ := e[k].(string); return s }

// nodeProc is a running node program that reports JSON lines.
type nodeProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan jsEvent
	stderr stacktest.Buffer
	mu     sync.Mutex
	seen   []string
}

// startNode runs node with args in dir; it is stopped (stdin closed,
// then killed if it lingers) when the test ends.
func startNode(t *testing.T, node, dir string, args ...string) *nodeProc {
	t.Helper()
	p := &nodeProc{cmd: exec.Command(node, args...), events: make(chan jsEvent, 256)}
	p.cmd.Dir = dir
	p.cmd.Stderr = &p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(p.events)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.seen = append(p.seen, sc.Text())
			p.mu.Unlock()
			var ev jsEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				p.events <- ev
			}
		}
	}()
	t.Cleanup(func() {
		_ = p.stdin.Close()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
		_ = p.cmd.Wait()
	})
	return p
}

// wait returns the next event that match accepts, failing the test on a
// "failed" event, at the program's exit or after d.
func (p *nodeProc) wait(t *testing.T, what string, d time.Duration, match func(jsEvent) bool) jsEvent {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				t.Fatalf("waiting for %s: the program exited\n%s", what, p.output())
			}
			if match(ev) {
				return ev
			}
			if ev.str("event") == "failed" {
				t.Fatalf("waiting for %s: %s\n%s", what, ev.str("error"), p.output())
			}
		case <-deadline:
			t.Fatalf("waiting for %s: nothing after %s\n%s", what, d, p.output())
		}
	}
}

func (p *nodeProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return "stdout:\n" + strings.Join(p.seen, "\n") + "\nstderr:\n" + p.stderr.String()
}

func isEvent(name string) func(jsEvent) bool {
	return func(ev jsEvent) bool { return ev.str("event") == name }
}

// latencyTarget is an HTTP server a session measures: /ok answers a
// fixed body (and lets any origin read it, as a measured server must for
// a page), /hang answers only when the client gives up or the test ends.
type latencyTarget struct {
	*httptest.Server
	hits atomic.Int64 // requests of /ok
	hung atomic.Int64 // requests of /hang
	body string
}

func startLatencyTarget(t *testing.T) *latencyTarget {
	t.Helper()
	lt := &latencyTarget{body: strings.Repeat("commandcontrol ", 100)}
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		lt.hits.Add(1)
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = io.WriteString(w, lt.body)
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		lt.hung.Add(1)
		w.Header().Set("Access-Control-Allow-Origin", "*")
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	lt.Server = httptest.NewServer(mux)
	t.Cleanup(func() { close(release); lt.Close() })
	return lt
}

// closedURL is an http URL on a loopback port nobody listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String() + "/"
	_ = ln.Close()
	return u
}

// latencyResult is latencyCheck's answer.
type latencyResult struct {
	URL      string  `json:"url"`
	Count    int     `json:"count"`
	MinMS    float64 `json:"min_ms"`
	MedianMS float64 `json:"median_ms"`
	MaxMS    float64 `json:"max_ms"`
	Status   int     `json:"status"`
	Bytes    int     `json:"bytes"`
}

// checkMeasurement checks a latencyCheck answer to the call with id
// callID and request body as the workbench and the audit read it.
func checkMeasurement(t *testing.T, m *nats.Msg, lt *latencyTarget, callID string, body []byte, count int) latencyResult {
	t.Helper()
	if code := m.Header.Get(fleet.HeaderErrorCode); code != "" {
		t.Fatalf("latencyCheck answered %s %s", code, m.Header.Get(fleet.HeaderError))
	}
	for h, want := range map[string]string{
		fleet.HeaderCallID:   callID,
		fleet.HeaderArgs:     fleet.ArgsDigest(body),
		fleet.HeaderFunction: "latencyCheck",
	} {
		if got := m.Header.Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	if d, err := strconv.ParseFloat(m.Header.Get(fleet.HeaderDuration), 64); err != nil || d <= 0 || d > 20 {
		t.Errorf("header %s = %q: want the seconds the call took", fleet.HeaderDuration, m.Header.Get(fleet.HeaderDuration))
	}
	var r latencyResult
	dec := json.NewDecoder(strings.NewReader(string(m.Data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("latencyCheck result %s: %v", m.Data, err)
	}
	if r.URL != lt.URL+"/ok" || r.Count != count || r.Status != http.StatusOK || r.Bytes != len(lt.body) {
		t.Errorf("latencyCheck result %+v: want %d fetches of %s/ok, status 200, %d bytes", r, count, lt.URL, len(lt.body))
	}
	if !(r.MinMS > 0 && r.MinMS <= r.MedianMS && r.MedianMS <= r.MaxMS) {
		t.Errorf("latencyCheck times %+v: want 0 < min <= median <= max", r)
	}
	return r
}

// checkResult checks a latencyCheck result the workbench returned: count
// fetches of lt's /ok, all answered.
func checkResult(t *testing.T, r bench.Reply, lt *latencyTarget, count int) latencyResult {
	t.Helper()
	var res latencyResult
	dec := json.NewDecoder(strings.NewReader(string(r.Result)))
	dec.DisallowUnknownFields()
	if r.Status != bench.StatusOK || dec.Decode(&res) != nil {
		t.Fatalf("reply of %s: %+v (result %s), want a latencyCheck result", r.Target(), r, r.Result)
	}
	if res.URL != lt.URL+"/ok" || res.Count != count || res.Status != http.StatusOK || res.Bytes != len(lt.body) ||
		!(res.MinMS > 0 && res.MinMS <= res.MedianMS && res.MedianMS <= res.MaxMS) {
		t.Errorf("reply of %s: %+v, want %d fetches of %s/ok, status 200, %d bytes, 0 < min <= median <= max", r.Target(), res, count, lt.URL, len(lt.body))
	}
	return res
}

// wantCallError checks that m is the error answer code whose description
// contains want, with the call's headers echoed.
func wantCallError(t *testing.T, m *nats.Msg, code int, want, callID string, body []byte) {
	t.Helper()
	if got := m.Header.Get(fleet.HeaderErrorCode); got != strconv.Itoa(code) || !strings.Contains(m.Header.Get(fleet.HeaderError), want) {
		t.Errorf("answer %s %q (body %q), want %d with %q", got, m.Header.Get(fleet.HeaderError), m.Data, code, want)
	}
	if m.Header.Get(fleet.HeaderCallID) != callID || m.Header.Get(fleet.HeaderArgs) != fleet.ArgsDigest(body) {
		t.Errorf("error answer headers %v: want %s=%q and %s=%q", m.Header, fleet.HeaderCallID, callID, fleet.HeaderArgs, fleet.ArgsDigest(body))
	}
}

// TestSessionJSArgsMatchGo runs the argument table the JavaScript library
// is tested on (sdk/js/test/testdata/args.json) through the agent's own
// decoder: a function gets the same arguments from a session as from an
// agent, and the same refusals.
func TestSessionJSArgsMatchGo(t *testing.T) {
	raw, err := os.ReadFile("../sdk/js/test/testdata/args.json")
	if err != nil {
		t.Fatal(err)
	}
	type tcase struct {
		Name  string          `json:"name"`
		Body  string          `json:"body"`
		Want  json.RawMessage `json:"want"`
		Error string          `json:"error"`
	}
	var table struct {
		About      string          `json:"about"`
		Spec       []functions.Arg `json:"spec"`
		Cases      []tcase         `json:"cases"`
		NoArgsSpec []tcase         `json:"no_args_spec"`
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&table); err != nil {
		t.Fatal(err)
	}
	run := func(spec functions.Spec, cases []tcase) {
		for _, c := range cases {
			got, err := functions.ParseArgs(spec, []byte(c.Body))
			if c.Error != "" {
				if err == nil || fleet.CodeOf(err) != fleet.CodeBadRequest || !strings.Contains(err.Error(), c.Error) {
					t.Errorf("%s: got %v, %v; want a 400 error with %q", c.Name, got, err, c.Error)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", c.Name, err)
				continue
			}
			var want, have any
			b, _ := json.Marshal(got)
			_ = json.Unmarshal(c.Want, &want)
			_ = json.Unmarshal(b, &have)
			if !reflect.DeepEqual(want, have) {
				t.Errorf("%s: got %s, want %s", c.Name, b, c.Want)
			}
		}
	}
	if len(table.Cases) < 20 || len(table.NoArgsSpec) < 4 {
		t.Fatalf("the table has %d+%d cases: it was cut", len(table.Cases), len(table.NoArgsSpec))
	}
	run(functions.Spec{Name: "fn", Args: table.Spec}, table.Cases)
	run(functions.Spec{Name: "fn"}, table.NoArgsSpec)
}

// TestSessionJSNodeLatencyCheck: a Node.js session joins over WebSocket
// with its own nkey and hello, exposes latencyCheck, and an operator's
// call returns its measurement of a local HTTP server with the headers
// the workbench and the audit check; bad arguments, a call id that is not
// the reply's call token, a failed fetch and a function out of time are
// answered with their codes; a reply subject the session may not use is
// not answered.
func TestSessionJSNodeLatencyCheck(t *testing.T) {
	node, dir := nodeReady(t)
	st := startSessionStack(t, fleet.AppRequest{Name: "demo", Functions: []string{"latencyCheck"}, Public: true})
	lt := startLatencyTarget(t)
	p := startNode(t, node, dir, "e2e/session.mjs", "--server", st.WSURL, "--app", "demo", "--call-timeout-ms", "3000")
	joined := p.wait(t, "the session to join", 30*time.Second, isEvent("joined"))
	id, key := joined.str("id"), joined.str("key")
	if id != fleet.SessionID("demo", key) {
		t.Fatalf("the session says its id is %q; fleet.SessionID(demo, %s) is %q", id, key, fleet.SessionID("demo", key))
	}
	// The control service admitted it as what it is: a public session of
	// demo, no user, from the address its broker saw (placed by the
	// sites map), with what it declared.
	s := st.sessionOf(t, fleet.SessionQuery{Where: map[string]string{"app": "demo"}}, func(s fleet.Session) bool { return s.ID == id })
	if s.Admission != fleet.AdmissionPublic || s.User != "" || s.IP != nbAddr || s.Location == nil || s.Location.City != "New Brunswick" ||
		s.Declared.Platform != fleet.PlatformDevice || s.Declared.AppVersion != "e2e-1" {
		t.Fatalf("session %+v: want one public session of demo from %s in New Brunswick, platform device, app version e2e-1", s, nbAddr)
	}

	body := []byte(`{"url":"` + lt.URL + `/ok","count":"3"}`) // as cc-bench --arg sends them
	m := st.callSession(t, id, "latencyCheck", body, "c1", "")
	checkMeasurement(t, m, lt, "c1", body, 3)
	if n := lt.hits.Load(); n != 3 {
		t.Errorf("the target got %d requests, want 3", n)
	}

	t.Run("errors have codes", func(t *testing.T) {
		closed := closedURL(t)
		cases := []struct {
			name, body string
			code       int
			want       string
		}{
			{"a bad count", `{"url":"` + lt.URL + `/ok","count":"ten"}`, fleet.CodeBadRequest, `argument "count": want an integer`},
			{"no url", `{}`, fleet.CodeBadRequest, `argument "url" (string) is required`},
			{"an unknown argument", `{"url":"x","verbose":"1"}`, fleet.CodeBadRequest, `has no argument "verbose"`},
			{"not JSON", `url=x`, fleet.CodeBadRequest, "must be a JSON object of arguments"},
			{"a file URL", `{"url":"file:///etc/passwd"}`, fleet.CodeBadRequest, "only http: and https: URLs are fetched"},
			{"nobody listening", `{"url":"` + closed + `","count":"1"}`, fleet.CodeUnavailable, "fetch 1 of 1 of " + closed + " failed"},
			{"a fetch out of time", `{"url":"` + lt.URL + `/hang","count":"1","timeout_ms":"100"}`, fleet.CodeTimeout, "took more than 100 ms"},
			{"the call out of time", `{"url":"` + lt.URL + `/hang","count":"1","timeout_ms":"60000"}`, fleet.CodeTimeout, "latencyCheck did not finish within 3000 ms"},
		}
		for i, c := range cases {
			call := fmt.Sprintf("e%d", i)
			m := st.callSession(t, id, "latencyCheck", []byte(c.body), call, "")
			wantCallError(t, m, c.code, c.want, call, []byte(c.body))
		}
	})

	t.Run("a call id that is not the reply's call token", func(t *testing.T) {
		reply := fleet.CallReply(st.CallerKey, id, "tokA", 0)
		m := st.callSession(t, id, "latencyCheck", body, "tokB", reply)
		wantCallError(t, m, fleet.CodeBadRequest, `the Cc-Call header "tokB" is not the call token "tokA"`, "tokB", body)
	})

	t.Run("a repeated call id runs once", func(t *testing.T) {
		before := lt.hits.Load()
		st.callSession(t, id, "latencyCheck", body, "r1", "")
		// The workbench's re-sent copy: same call id, its own reply subject.
		copy1 := fleet.CallReply(st.CallerKey, id, "r1", 1)
		sub, err := st.Caller.SubscribeSync(copy1)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(fleet.SessionFnSubject(id, "latencyCheck", st.CallerKey))
		m.Reply, m.Data = copy1, body
		m.Header.Set(fleet.HeaderCallID, "r1")
		if err := st.Caller.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		// The session reports the copy dropped instead of answering it.
		p.wait(t, "the repeat dropped", 10*time.Second, func(ev jsEvent) bool {
			return ev.str("event") == "call" && strings.Contains(ev.str("dropped"), "repeat of call r1")
		})
		if err := st.Caller.Flush(); err != nil {
			t.Fatal(err)
		}
		if n, _, _ := sub.Pending(); n != 0 {
			t.Errorf("the repeat of call r1 was answered %d times", n)
		}
		if n := lt.hits.Load() - before; n != 3 {
			t.Errorf("call r1 and its repeat fetched %d times, want 3 (once)", n)
		}
	})

	t.Run("replies it may not send are dropped", func(t *testing.T) {
		for _, r := range []struct{ reply, why string }{
			{fleet.CallReply(st.CallerKey, fleet.ReplyToAll, "b1", 0), "not this session"},                      // no broadcast to sessions
			{fleet.CallReply(st.CallerKey, fleet.SessionID("demo", st.CallerKey), "b2", 0), "not this session"}, // another session
			{fleet.CallReply("UOTHEROPERATOR", id, "b3", 0), "is not the caller's inbox"},                       // another caller's inbox
			{"_INBOX." + nuid.Next(), "not under _INBOX_cc"},                                                    // a plain inbox
		} {
			m := nats.NewMsg(fleet.SessionFnSubject(id, "latencyCheck", st.CallerKey))
			m.Reply = r.reply
			m.Data = body
			if err := st.Caller.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
			p.wait(t, "the call on "+r.reply+" dropped", 10*time.Second, func(ev jsEvent) bool {
				return ev.str("event") == "call" && strings.Contains(ev.str("dropped"), r.why)
			})
		}
	})

	// Nothing the session sent was refused by the broker.
	p.mu.Lock()
	seen := strings.Join(p.seen, "\n")
	p.mu.Unlock()
	if strings.Contains(seen, `"type":"error"`) {
		t.Errorf("the session saw broker errors:\n%s", seen)
	}
}

// TestSessionJSNodeFunctions: what an exposed function answers reaches
// the caller as the agent would answer it: its arguments as sent, a
// thrown CallError's code, 500 for any other error or a result that is
// no JSON, 413 for a result over the answer limit (64 KiB), 503 past the
// session's call slots; and a function the app does not have cannot be
// exposed (the broker refuses the subscription) with an error that says
// who must add it.
func TestSessionJSNodeFunctions(t *testing.T) {
	node, dir := nodeReady(t)
	st := startSessionStack(t, fleet.AppRequest{Name: "demo", Functions: []string{"latencyCheck", "echo", "fail", "big"}, Public: true})
	lt := startLatencyTarget(t)
	p := startNode(t, node, dir, "e2e/session.mjs", "--server", st.WSURL, "--app", "demo",
		"--test-functions", "--max-concurrent", "1", "--call-timeout-ms", "3000", "--try-expose", "screenshot")
	refused := p.wait(t, "screenshot refused", 30*time.Second, func(ev jsEvent) bool {
		return ev.str("event") == "refused" || ev.str("event") == "exposed"
	})
	if !strings.Contains(refused.str("error"), "expose screenshot: the broker refused it") ||
		!strings.Contains(refused.str("error"), `the operator must give app "demo" the function screenshot`) {
		t.Errorf("exposing a function the app lacks: %v", refused)
	}
	id := p.wait(t, "the session to join", 30*time.Second, isEvent("joined")).str("id")

	m := st.callSession(t, id, "echo", []byte(`{"a":"1","b":2}`), "", "")
	if m.Header.Get(fleet.HeaderErrorCode) != "" || string(m.Data) != `{"a":"1","b":2}` {
		t.Errorf("echo answered %v %s: want its arguments as sent", m.Header, m.Data)
	}
	for _, c := range []struct {
		fn, body string
		code     int
		want     string
	}{
		{"fail", `{}`, fleet.CodeInternal, "boom"},
		{"fail", `{"code":"404"}`, fleet.CodeNotFound, "nothing here"},
		{"fail", `{"mode":"fn"}`, fleet.CodeInternal, "cannot encode the result"},
		{"big", `{"bytes":"2000000"}`, fleet.CodeTooLarge, "more than the 65536-byte answer limit"},
		// Over the service's --session-max-payload (64 KiB), under the
		// broker's 1 MiB: answered 413, never sent (the service would
		// close the session for it).
		{"big", `{"bytes":"100000"}`, fleet.CodeTooLarge, "more than the 65536-byte answer limit"},
		{"echo", `{"a":` + strings.Repeat(" ", 70<<10) + `1}`, fleet.CodeTooLarge, "at most 65536 are allowed"},
	} {
		call := nuid.Next()
		m := st.callSession(t, id, c.fn, []byte(c.body), call, "")
		wantCallError(t, m, c.code, c.want, call, []byte(c.body))
		if len(m.Data) != 0 {
			t.Errorf("%s %s: an error answer has a body: %q", c.fn, c.body, m.Data)
		}
	}

	// One call slot: a call while another runs is answered busy.
	hang := []byte(`{"url":"` + lt.URL + `/hang","count":"1","timeout_ms":"60000"}`)
	hangReply := fleet.CallReply(st.CallerKey, id, "h1", 0)
	hangSub, err := st.Caller.SubscribeSync(hangReply)
	if err != nil {
		t.Fatal(err)
	}
	hm := nats.NewMsg(fleet.SessionFnSubject(id, "latencyCheck", st.CallerKey))
	hm.Reply, hm.Data = hangReply, hang
	hm.Header.Set(fleet.HeaderCallID, "h1")
	if err := st.Caller.PublishMsg(hm); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitFor(t, "the first call to fetch", 20*time.Second, func() bool { return lt.hung.Load() == 1 })
	busy := st.callSession(t, id, "echo", []byte(`{}`), "e1", "")
	wantCallError(t, busy, fleet.CodeUnavailable, "busy: all 1 call slots are taken; retry later", "e1", []byte(`{}`))
	// The running call ends at the session's call timeout, and frees its slot.
	late, err := hangSub.NextMsg(20 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wantCallError(t, late, fleet.CodeTimeout, "latencyCheck did not finish within 3000 ms", "h1", hang)
	if m := st.callSession(t, id, "echo", []byte(`{}`), "e2", ""); m.Header.Get(fleet.HeaderErrorCode) != "" {
		t.Errorf("after the slot was freed echo answered %v", m.Header)
	}
}

// TestSessionJSNodeReconnect: a session of a signed app joins through
// the real callout with a token its token function signed with the app's
// seed (bound to its key); when the broker drops its connection it joins
// again by itself, with the same key (so the same id) and a fresh token
// (waited for, not dialed without: the control service lists the new
// token's claims, and its audit shows no refused session), and answers
// calls again.
func TestSessionJSNodeReconnect(t *testing.T) {
	node, dir := nodeReady(t)
	st := startSessionStack(t, fleet.AppRequest{Name: "shop", Functions: []string{"latencyCheck"}})
	lt := startLatencyTarget(t)
	// The token function takes a while, as a backend's would: longer
	// than the first reconnect's backoff (at most 1250 ms: 500 ms, with
	// jitter, doubled as the dropped connection was under 10 s old), so
	// a session that redialed at once would present its spent token.
	p := startNode(t, node, dir, "e2e/session.mjs", "--server", st.WSURL, "--app", "shop",
		"--app-seed", st.Seeds["shop"], "--token-delay-ms", "1500")
	joined := p.wait(t, "the session to join", 30*time.Second, isEvent("joined"))
	id, key := joined.str("id"), joined.str("key")
	if id != fleet.SessionID("shop", key) {
		t.Fatalf("the session says its id is %q; fleet.SessionID(shop, %s) is %q", id, key, fleet.SessionID("shop", key))
	}
	body := []byte(`{"url":"` + lt.URL + `/ok","count":"1"}`)
	checkMeasurement(t, st.callSession(t, id, "latencyCheck", body, "c1", ""), lt, "c1", body, 1)

	shop := fleet.SessionQuery{Where: map[string]string{"app": "shop"}}
	first := st.sessionOf(t, shop, func(s fleet.Session) bool { return s.ID == id })
	if first.Admission != fleet.AdmissionSigned || first.User != "e2e-user" || first.Claims["fetch"] != "1" {
		t.Fatalf("the first admission %+v: want signed, user e2e-user, the first token (fetch 1)", first)
	}
	st.kick(t, id)
	p.wait(t, "the session to reconnect", 30*time.Second, func(ev jsEvent) bool {
		return ev.str("event") == "status" && ev.str("type") == "reconnect"
	})
	// Admitted again with the same key and id and a fresh token.
	again := st.sessionOf(t, shop, func(s fleet.Session) bool { return s.Claims["fetch"] == "2" })
	if again.ID != id || again.User != "e2e-user" {
		t.Fatalf("after the drop the service lists %+v: want session %s again, with a fresh token (fetch 2)", again, id)
	}
	// It waited for the fresh token rather than dial with the spent one.
	if refused := st.sessionRefusals(t); len(refused) != 0 {
		t.Errorf("the callout refused the session's reconnects: %q", refused)
	}
	// Re-subscribed: the same id answers again.
	stacktest.WaitFor(t, "latencyCheck answered after the reconnect", 20*time.Second, func() bool {
		m, err := st.trySessionCall(id, "latencyCheck", body, "", "", 2*time.Second)
		return err == nil && m.Header.Get(fleet.HeaderErrorCode) == ""
	})
}

// TestSessionJSNodeSuperseded: two sessions with one stored key (two tabs
// sharing localStorage) are one session id, and the control service keeps
// only the newest connection of an id. They do not close each other at
// full speed, and neither stops for good: each connection is closed soon
// after it was made, so each side backs off; after SupersededAfter (3)
// short connections in a row a side reports "superseded" (a possibility,
// worded as one) and keeps reconnecting up to supersededMaxDelayMs apart
// (4 s here, 5 minutes by default). Over a 15 s window the disconnects
// are counted: at most 2×SupersededAfter+1 before both sides are
// superseded, then at most one per side per 0.75×cap (the jitter's
// floor), plus one each for the window's edges. Neither tab closes; the
// id stays listed and answers (whichever tab holds it).
func TestSessionJSNodeSuperseded(t *testing.T) {
	node, dir := nodeReady(t)
	st := startSessionStack(t, fleet.AppRequest{Name: "demo", Functions: []string{"latencyCheck"}, Public: true})
	lt := startLatencyTarget(t)
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	const (
		capMs  = 4000
		window = 15 * time.Second
	)
	args := []string{"e2e/session.mjs", "--server", st.WSURL, "--app", "demo", "--seed", string(stacktest.Seed(t, kp)),
		"--max-reconnect-delay-ms", "1000", "--superseded-max-delay-ms", fmt.Sprint(capMs)}
	tabs := []*nodeProc{startNode(t, node, dir, args...)}
	id := tabs[0].wait(t, "the first tab to join", 30*time.Second, isEvent("joined")).str("id")
	if want := fleet.SessionID("demo", stacktest.Pub(t, kp)); id != want {
		t.Fatalf("the first tab joined as %s, want %s (the stored key's id)", id, want)
	}
	tabs = append(tabs, startNode(t, node, dir, args...))

	// A tab reconnects at most once per 0.75×cap once superseded, and each
	// reconnect closes the other tab's connection.
	maxDisconnects := 2*3 + 1 + 2*(int(window/time.Millisecond)/(capMs*3/4)+1)
	var disconnects, superseded [2]int
	end := time.After(window)
	for done := false; !done; {
		var ev jsEvent
		var ok bool
		i := 0
		select {
		case ev, ok = <-tabs[0].events:
		case ev, ok = <-tabs[1].events:
			i = 1
		case <-end:
			done = true
			continue
		}
		if !ok {
			t.Fatalf("tab %d exited\n%s", i, tabs[i].output())
		}
		switch {
		case ev.str("event") == "failed":
			t.Fatalf("tab %d failed: %s\n%s", i, ev.str("error"), tabs[i].output())
		case ev.str("event") != "status":
		case ev.str("type") == "disconnect":
			disconnects[i]++
			if disconnects[0]+disconnects[1] > maxDisconnects {
				t.Fatalf("the tabs close each other too often: %v disconnects within %s, want at most %d in all\nfirst tab %s\nsecond tab %s",
					disconnects, window, maxDisconnects, tabs[0].output(), tabs[1].output())
			}
		case ev.str("type") == "superseded":
			superseded[i]++
			if !strings.Contains(ev.str("error"), "another connection may be using this session's key, or the network keeps dropping it") {
				t.Errorf("superseded status %v: want it to say another connection may be using the key", ev)
			}
		case ev.str("type") == "closed":
			t.Fatalf("tab %d stopped: only close() may stop a session\n%s", i, tabs[i].output())
		}
	}
	t.Logf("within %s: disconnects %v, superseded reports %v", window, disconnects, superseded)
	if superseded[0]+superseded[1] == 0 {
		t.Errorf("no tab reported superseded after %v disconnects\nfirst tab %s\nsecond tab %s", disconnects, tabs[0].output(), tabs[1].output())
	}
	// The id is one session, and it answers: whichever tab holds it now.
	st.sessionOf(t, fleet.SessionQuery{Where: map[string]string{"app": "demo"}}, func(s fleet.Session) bool { return s.ID == id })
	body := []byte(`{"url":"` + lt.URL + `/ok","count":"1"}`)
	stacktest.WaitFor(t, "the id to answer", 30*time.Second, func() bool {
		m, err := st.trySessionCall(id, "latencyCheck", body, "", "", 2*time.Second)
		return err == nil && m.Header.Get(fleet.HeaderErrorCode) == ""
	})
}

// TestSessionJSNodeShortDrops: a lone session whose connection is dropped
// soon after each (re)connect (a flaky network, a proxy reset, a rolling
// broker restart) is not stopped by the superseded heuristic: after
// SupersededAfter short connections it reports "superseded" as a
// possibility and reconnects after its backoff (a 1 s cap here), each
// time, and answers calls again. The drops are real: the broker closes
// the session's connection (CONNZ user "session:<id>").
func TestSessionJSNodeShortDrops(t *testing.T) {
	node, dir := nodeReady(t)
	st := startSessionStack(t, fleet.AppRequest{Name: "demo", Functions: []string{"latencyCheck"}, Public: true})
	lt := startLatencyTarget(t)
	p := startNode(t, node, dir, "e2e/session.mjs", "--server", st.WSURL, "--app", "demo",
		"--max-reconnect-delay-ms", "500", "--superseded-max-delay-ms", "1000")
	id := p.wait(t, "the session to join", 30*time.Second, isEvent("joined")).str("id")

	const drops = 5
	superseded := 0
	for n := 1; n <= drops; n++ {
		st.kick(t, id)
		// The next connection, counting the superseded reports on the way.
		p.wait(t, fmt.Sprintf("reconnect %d", n), 30*time.Second, func(ev jsEvent) bool {
			if ev.str("event") != "status" {
				return false
			}
			switch ev.str("type") {
			case "superseded":
				superseded++
				if !strings.Contains(ev.str("error"), "another connection may be using this session's key, or the network keeps dropping it") {
					t.Errorf("superseded status %v: want it worded as a possibility", ev)
				}
			case "closed":
				t.Fatalf("the session stopped after %d drops: only close() may stop a session\n%s", n, p.output())
			}
			return ev.str("type") == "reconnect"
		})
	}
	if superseded != 1 {
		t.Errorf("%d superseded reports over %d short connections in a row, want 1 (at the %dth)", superseded, drops, 3)
	}
	// Connected again and serving: one connection of the id, answering.
	body := []byte(`{"url":"` + lt.URL + `/ok","count":"1"}`)
	stacktest.WaitFor(t, "latencyCheck answered after the drops", 20*time.Second, func() bool {
		m, err := st.trySessionCall(id, "latencyCheck", body, "", "", 2*time.Second)
		return err == nil && m.Header.Get(fleet.HeaderErrorCode) == ""
	})
}

// TestSessionJSNodeRefused: a session the callout refuses (a token signed
// by another key than the app's) fails to join with an error saying so,
// and the audit records the refusal with its reason.
func TestSessionJSNodeRefused(t *testing.T) {
	node, dir := nodeReady(t)
	st := startSessionStack(t, fleet.AppRequest{Name: "shop", Functions: []string{"latencyCheck"}})
	other, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	p := startNode(t, node, dir, "e2e/session.mjs", "--server", st.WSURL, "--app", "shop",
		"--app-seed", string(stacktest.Seed(t, other)))
	ev := p.wait(t, "the join to fail", 30*time.Second, func(ev jsEvent) bool {
		return ev.str("event") == "failed" || ev.str("event") == "joined"
	})
	if want := `cannot join app "shop" at ` + st.WSURL; ev.str("event") != "failed" ||
		!strings.HasPrefix(ev.str("error"), want) || !strings.Contains(ev.str("error"), "the broker refused the session") {
		t.Fatalf("got %v: want the join to fail with %q… the broker refused the session", ev, want)
	}
	var refused []string
	stacktest.WaitFor(t, "the refusal in the audit", 10*time.Second, func() bool {
		refused = st.sessionRefusals(t)
		return len(refused) > 0
	})
	if len(refused) != 1 || !strings.Contains(refused[0], "not signed by the app's key") {
		t.Errorf("the callout refused %q: want one refusal of a token not signed by the app's key", refused)
	}
	if ss, err := st.Bench.Sessions(ctxFor(t), fleet.SessionQuery{}); err != nil || len(ss) != 0 {
		t.Errorf("sessions %+v (%v): want none", ss, err)
	}
}

// TestSessionJSNodeByLocation is issue #13's end to end: the broker with
// its WebSocket listener, the control service, a public and a signed app,
// sessions of the JavaScript library running in Node.js from two loopback
// addresses that the sites map places in New Brunswick and Newark (New
// Jersey). The workbench, calling latencyCheck by location, gets exactly
// the New Brunswick sessions' measurements (of both apps), each as the
// control service knows the session; a Node process killed makes its
// session "left" for a workbench watching sessions.
func TestSessionJSNodeByLocation(t *testing.T) {
	node, dir := nodeReady(t)
	st := startSessionStack(t,
		fleet.AppRequest{Name: "demo", Functions: []string{"latencyCheck"}, Public: true},
		fleet.AppRequest{Name: "shop", Functions: []string{"latencyCheck"}})
	lt := startLatencyTarget(t)
	type nodeSession struct {
		app, from string
		p         *nodeProc
		id        string
	}
	sessions := []*nodeSession{{app: "demo", from: nbAddr}, {app: "demo", from: nbAddr}, {app: "shop", from: nbAddr},
		{app: "demo", from: newarkAddr}, {app: "shop", from: newarkAddr}}
	for _, s := range sessions {
		args := []string{"e2e/session.mjs", "--server", st.WSURL, "--app", s.app, "--local-address", s.from}
		if s.app == "shop" {
			args = append(args, "--app-seed", st.Seeds["shop"])
		}
		s.p = startNode(t, node, dir, args...)
	}
	byID := map[string]*nodeSession{}
	var nbIDs []string
	for _, s := range sessions {
		s.id = s.p.wait(t, "a "+s.app+" session from "+s.from+" to join", 30*time.Second, isEvent("joined")).str("id")
		byID[s.id] = s
		if s.from == nbAddr {
			nbIDs = append(nbIDs, s.id)
		}
	}
	var all []string
	for id := range byID {
		all = append(all, id)
	}
	awaitSessions(t, st.Bench, fleet.SessionQuery{}, all...)
	nb := fleet.SessionQuery{Where: map[string]string{"city": "New Brunswick", "region": "New Jersey"}}
	for _, s := range awaitSessions(t, st.Bench, nb, nbIDs...) {
		if s.IP != nbAddr || s.Location == nil || *s.Location != newBrunswick || s.App != byID[s.ID].app {
			t.Errorf("session %+v: want app %s from %s in New Brunswick", s, byID[s.ID].app, nbAddr)
		}
	}

	// A workbench watching sessions, to see one leave.
	events := make(chan fleet.SessionEvent, 64)
	wctx, stopWatch := context.WithCancel(ctxFor(t))
	watched := make(chan struct{})
	var watchErr error
	go func() {
		defer close(watched)
		watchErr = st.Bench.WatchSessions(wctx, func(ev fleet.SessionEvent) {
			select {
			case events <- ev:
			case <-wctx.Done():
			}
		})
	}()
	t.Cleanup(func() { stopWatch(); <-watched })
	waitEvent := func(what string, match func(fleet.SessionEvent) bool) fleet.SessionEvent {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case ev := <-events:
				if match(ev) {
					return ev
				}
			case <-watched:
				t.Fatalf("waiting for %s: the watch ended: %v", what, watchErr)
			case <-deadline:
				t.Fatalf("waiting for %s: nothing after 20s", what)
			}
		}
	}
	waitEvent("the watch to sync", func(ev fleet.SessionEvent) bool { return ev.Event == bench.EventSynced })

	res, err := st.Bench.Call(ctxFor(t), "latencyCheck", map[string]any{"url": lt.URL + "/ok", "count": "2"},
		bench.CallOptions{Sessions: &nb, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Expected != len(nbIDs) || !res.AllOK() || res.TimedOut || len(res.Unexpected) != 0 || len(res.Replied) != len(nbIDs) {
		t.Fatalf("the call by location: %+v, replies %+v; want the %d New Brunswick sessions answering", res.Summary, res.Replied, len(nbIDs))
	}
	var replied []string
	for _, r := range res.Replied {
		replied = append(replied, r.Session)
		s := byID[r.Session]
		if s == nil || s.from != nbAddr || r.App != s.app || r.Location == nil || *r.Location != newBrunswick {
			t.Errorf("reply %+v: want a New Brunswick session's, with its app and location", r)
		}
		checkResult(t, r, lt, 2)
	}
	sort.Strings(replied)
	sort.Strings(nbIDs)
	if !reflect.DeepEqual(replied, nbIDs) {
		t.Errorf("replies from %v, want exactly the New Brunswick sessions %v", replied, nbIDs)
	}
	if n := lt.hits.Load(); n != int64(2*len(nbIDs)) {
		t.Errorf("the target got %d requests, want %d (2 from each New Brunswick session, none from Newark)", n, 2*len(nbIDs))
	}

	// A Node process killed: its session leaves.
	gone := sessions[1]
	if err := gone.p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	left := waitEvent("session "+gone.id+" to leave", func(ev fleet.SessionEvent) bool { return ev.Event == fleet.EventLeft })
	if left.Session.ID != gone.id || left.Session.App != "demo" {
		t.Errorf("left %+v: want the killed process's session %s", left.Session, gone.id)
	}
	var still []string
	for _, id := range nbIDs {
		if id != gone.id {
			still = append(still, id)
		}
	}
	awaitSessions(t, st.Bench, nb, still...)
}

// TestSessionJSBrowser: the browser example (examples/browser), bundled
// with esbuild, in a real headless Chromium: the page joins as a public
// session of demo and exposes latencyCheck; an operator's call returns
// the browser's own measurement of a local HTTP server (fetched across
// origins, as a page must). A reload keeps the session id (the key is in
// the tab's sessionStorage) and the page answers again. The page in a
// second tab of the same browser is a session of its own (a key of its
// own): both are listed and both answer, neither superseding the other.
func TestSessionJSBrowser(t *testing.T) {
	node, dir := nodeReady(t)
	chromium := os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		msg := "no Chromium at " + chromium + ": apt-get install chromium (or set CHROMIUM)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	example, _ := filepath.Abs("../examples/browser")
	bundle := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, node, "scripts/example.mjs", "--outdir", bundle)
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("esbuild the example: %v\n%s", err, out)
	}
	mux := http.NewServeMux()
	mux.Handle("/dist/", http.StripPrefix("/dist/", http.FileServer(http.Dir(bundle))))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, filepath.Join(example, "index.html"))
	})
	site := httptest.NewServer(mux)
	t.Cleanup(site.Close)

	// Only the test page's origin may open a WebSocket from a browser.
	st := startSessionStackOrigins(t, []string{site.URL}, fleet.AppRequest{Name: "demo", Functions: []string{"latencyCheck"}, Public: true})
	lt := startLatencyTarget(t)
	p := startNode(t, node, dir, "e2e/browser.mjs", "--chromium", chromium,
		"--page", site.URL+"/?server="+st.WSURL+"&app=demo")
	id := p.wait(t, "the page to join", 60*time.Second, isEvent("joined")).str("id")
	s := st.sessionOf(t, fleet.SessionQuery{Where: map[string]string{"app": "demo"}}, func(s fleet.Session) bool { return s.ID == id })
	if s.Admission != fleet.AdmissionPublic || s.Declared.Platform != fleet.PlatformBrowser ||
		!strings.Contains(s.Declared.UserAgent, "Chrome") || s.Declared.AppVersion != "browser-example-1" ||
		s.IP != nbAddr || s.Location == nil || s.Location.City != "New Brunswick" {
		t.Fatalf("session %+v: want the page's public session %s, platform browser, a Chrome user agent, from %s in New Brunswick", s, id, nbAddr)
	}

	body := []byte(`{"url":"` + lt.URL + `/ok","count":"5"}`)
	checkMeasurement(t, st.callSession(t, id, "latencyCheck", body, "b1", ""), lt, "b1", body, 5)
	if n := lt.hits.Load(); n != 5 {
		t.Errorf("the target got %d requests from the browser, want 5", n)
	}
	// The workbench, calling by location, gets the browser's measurement.
	nb := fleet.SessionQuery{Where: map[string]string{"city": "New Brunswick", "region": "New Jersey"}}
	res, err := st.Bench.Call(ctxFor(t), "latencyCheck", map[string]any{"url": lt.URL + "/ok", "count": "2"},
		bench.CallOptions{Sessions: &nb, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Expected != 1 || !res.AllOK() || len(res.Replied) != 1 || res.Replied[0].Session != id {
		t.Fatalf("the call by location: %+v, replies %+v; want the page's session %s answering", res.Summary, res.Replied, id)
	}
	checkResult(t, res.Replied[0], lt, 2)
	if n := lt.hits.Load(); n != 7 {
		t.Errorf("the target got %d requests from the browser, want 7", n)
	}

	if _, err := io.WriteString(p.stdin, "reload\n"); err != nil {
		t.Fatal(err)
	}
	again := p.wait(t, "the reloaded page to join", 60*time.Second, isEvent("joined")).str("id")
	if again != id {
		t.Fatalf("after a reload the session id is %s, was %s: the key must stay in sessionStorage", again, id)
	}
	checkMeasurement(t, st.callSession(t, id, "latencyCheck", body, "b2", ""), lt, "b2", body, 5)

	// A second tab: same origin, same localStorage, its own sessionStorage.
	if _, err := io.WriteString(p.stdin, "tab\n"); err != nil {
		t.Fatal(err)
	}
	second := p.wait(t, "the second tab to join", 60*time.Second, isEvent("joined"))
	if second.str("id") == id || second.str("id") == "" {
		t.Fatalf("the second tab joined as %q, the first is %s: each tab must have a key of its own (one id is one connection)", second.str("id"), id)
	}
	awaitSessions(t, st.Bench, fleet.SessionQuery{Where: map[string]string{"app": "demo"}}, id, second.str("id"))
	checkMeasurement(t, st.callSession(t, id, "latencyCheck", body, "b3", ""), lt, "b3", body, 5)
	checkMeasurement(t, st.callSession(t, second.str("id"), "latencyCheck", body, "b4", ""), lt, "b4", body, 5)
}
