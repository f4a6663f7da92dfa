package cli

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// jsonObjects decodes JSON Lines.
func jsonObjects(t *testing.T, out string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", line, err)
		}
		objs = append(objs, m)
	}
	return objs
}

// smallFleet has two web servers answering current-load, one failing, one
// silent db. Their current-load takes an int argument n.
func smallFleet(t *testing.T) *testFleet {
	f := startFleet(t)
	web := map[string]string{"role": "web", "location": "New-Jersey"}
	n := functions.Arg{Name: "n", Type: functions.TypeInt}
	f.agent("10.0.0.1_web01", web, stacktest.Result("current-load", map[string]any{"load1": 12.5, "load5": 3}, n))
	f.agent("10.0.0.2_web02", web, stacktest.Result("current-load", map[string]any{"load1": 0.5, "load5": 1}, n))
	f.agent("10.0.0.3_web03", web, stacktest.Fail("current-load", fleet.CodeInternal, "cannot read /proc/loadavg", n))
	f.agent("10.0.0.4_db01", map[string]string{"role": "db"}, stacktest.Silent(t, "current-load", n))
	return f
}

func TestServersCommand(t *testing.T) {
	f := smallFleet(t)
	stdout, stderr, code := cc(t, f.env(), "servers", "--where", "role=web")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	golden(t, "servers", stdout)

	stdout, _, code = cc(t, f.env(), "servers", "--json")
	objs := jsonObjects(t, stdout)
	if code != exitOK || len(objs) != 4 || objs[0]["machine"] != "10.0.0.1_web01" || objs[0]["labels"] == nil {
		t.Errorf("exit %d, --json objects %v", code, objs)
	}
	// A selection that matches nobody fails, in JSON mode too, with the
	// reason on stderr and nothing on stdout.
	for _, args := range [][]string{
		{"servers", "--where", "role=nothing"},
		{"servers", "--where", "role=nothing", "--json"},
		{"servers", "--where", "role=nothing", "--all"},
	} {
		stdout, stderr, code = cc(t, f.env(), args...)
		if code != exitFailure || stdout != "" || !strings.Contains(stderr, "machine matches role=nothing; see which are with: cc-bench ") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	for _, args := range [][]string{
		{"call", "current-load", "--where", "role=nothing"},
		{"call", "current-load", "--where", "role=nothing", "--json"},
	} {
		stdout, stderr, code = cc(t, f.env(), args...)
		if code != exitFailure || strings.Contains(stdout, "{") ||
			stderr != "cc-bench: call current-load: no ONLINE machine matches role=nothing; see which are with: cc-bench servers\n" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	// A key no machine has is the likely typo: say which one it meant.
	for _, args := range [][]string{
		{"servers", "--where", "rol=web"},
		{"call", "current-load", "--where", "rol=web", "--json"},
	} {
		stdout, stderr, code = cc(t, f.env(), args...)
		if code != exitFailure || stdout != "" ||
			!strings.Contains(stderr, `no ONLINE machine matches rol=web: no ONLINE machine has the key "rol" (did you mean "role"?); see which are with: cc-bench servers`) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
}

func TestCallCommand(t *testing.T) {
	f := smallFleet(t)
	// Flags after the function name; --timeout, a global flag, too.
	stdout, stderr, code := cc(t, f.env(), "call", "current-load", "--timeout", "500ms", "--arg", "n=1")
	if code != exitFailure {
		t.Errorf("exit %d, want 1 (an error and a silent machine): %s", code, stderr)
	}
	golden(t, "call", stdout)

	stdout, _, code = cc(t, f.env(), "call", "current-load", "--where", "role=web", "--filter", "load1 > 10", "--timeout", "10s")
	if code != exitFailure {
		t.Errorf("filter: exit %d, want 1 (web03 failed)", code)
	}
	golden(t, "call_filter", stdout)

	// A filter that fits no result fails, naming the field and the
	// nearest one, in JSON mode too.
	for _, tt := range []struct{ filter, want string }{
		{"lod1 > 1", `cc-bench: --filter "lod1 > 1": the filter does not fit the results: no result has the field lod1 (did you mean load1?)` + "\n"},
		{`load1 > "abc"`, `compares a number with a string`},
	} {
		for _, json := range []bool{false, true} {
			args := []string{"call", "current-load", "--where", "hostname=web0[12]", "--filter", tt.filter, "--timeout", "10s"}
			if json {
				args = append(args, "--json")
			}
			_, stderr, code := cc(t, f.env(), args...)
			if code != exitFailure || !strings.Contains(stderr, tt.want) {
				t.Errorf("%q: exit %d, stderr %q; want 1 and %q", args, code, stderr, tt.want)
			}
		}
	}

	start := time.Now()
	stdout, stderr, code = cc(t, f.env(), "call", "current-load", "--where", "hostname=web0[12]", "--timeout", "10s")
	if code != exitOK || time.Since(start) > 5*time.Second {
		t.Errorf("all ok: exit %d after %v: %s%s", code, time.Since(start), stdout, stderr)
	}
}

func TestCallJSON(t *testing.T) {
	f := smallFleet(t)
	stdout, _, code := cc(t, f.env(), "call", "current-load", "--json", "--timeout", "300ms")
	if code != exitFailure {
		t.Errorf("exit %d, want 1", code)
	}
	byMachine := map[string]map[string]any{}
	for _, o := range jsonObjects(t, stdout) {
		if _, ok := o["duration_ms"].(float64); !ok {
			t.Errorf("%v: no duration_ms", o)
		}
		byMachine[o["machine"].(string)] = o
	}
	if got := byMachine["10.0.0.1_web01"]; got["status"] != "ok" || !reflect.DeepEqual(got["result"], map[string]any{"load1": 12.5, "load5": 3.0}) {
		t.Errorf("web01: %v", got)
	}
	if got := byMachine["10.0.0.3_web03"]; got["status"] != "error" ||
		!reflect.DeepEqual(got["error"], map[string]any{"code": 500.0, "description": "cannot read /proc/loadavg"}) {
		t.Errorf("web03: %v", got)
	}
	if got := byMachine["10.0.0.4_db01"]; got["status"] != "no-response" || got["result"] != nil {
		t.Errorf("db01: %v", got)
	}
	if len(byMachine) != 4 {
		t.Errorf("got %d machines, want 4", len(byMachine))
	}
}

func TestCallExplicitMachine(t *testing.T) {
	f := smallFleet(t)
	stdout, _, code := cc(t, f.env(), "call", "machine-info", "--machine", "10.0.0.9_offline", "--timeout", "10s", "--json")
	objs := jsonObjects(t, stdout)
	if code != exitFailure || len(objs) != 1 || objs[0]["status"] != "no-response" {
		t.Errorf("exit %d, %v", code, objs)
	}
}

func TestWatchCommand(t *testing.T) {
	f := startFleet(t)
	f.agent("10.0.0.1_web01", map[string]string{"role": "web"})
	f.agent("10.0.0.2_db01", map[string]string{"role": "db"})
	stacktest.RegisterMachine(t, f.svc, "10.0.0.3_web02", map[string]string{"role": "web"})
	// joinLeave makes web02 come online and go offline again.
	joinLeave := func() {
		a := stacktest.NewAgent(t, f.svc, "10.0.0.3_web02")
		stacktest.RunAgent(t, f.svc, a)
		a.Close()
		stacktest.WaitOffline(t, f.svc, "10.0.0.3_web02")
	}
	for _, tt := range []struct {
		name string
		args []string
	}{{"watch", []string{"watch"}}, {"watch_json", []string{"watch", "--json", "--where", "role=web"}}} {
		name, args := tt.name, tt.args
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out := &stacktest.Buffer{}
		done := make(chan int)
		go func() {
			_, _, code := ccCtx(ctx, t, f.env(), out, args...)
			done <- code
		}()
		waitFor(t, out, `"machine":"10.0.0.1_web01"`, "-- 2 online")
		joinLeave()
		waitFor(t, out, "left     10.0.0.3_web02", `"event":"left"`)
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("%q: exit %d after Ctrl-C", args, code)
		}
		// The broker names the disconnect "Client Closed", or "Read Error"
		// when the socket closed with data still unread (a TCP reset);
		// both are a clean stop of the agent.
		golden(t, name, strings.ReplaceAll(out.String(), "Read Error", "Client Closed"))
		joinLeave()
	}
}

// TestWatchCommandResyncs: the watch's connection is cut and kept from
// coming back (a proxy in front of the broker holds it) while one machine
// leaves and another joins. The watch says it is stale, then, reconnected,
// that it resyncs, and shows both changes.
func TestWatchCommandResyncs(t *testing.T) {
	f := startFleet(t)
	web := map[string]string{"role": "web"}
	f.agent("10.0.0.2_db01", map[string]string{"role": "db"})
	stacktest.RegisterMachine(t, f.svc, "10.0.0.1_web01", web)
	stacktest.RegisterMachine(t, f.svc, "10.0.0.3_web02", web)
	start := func(id string) *agent.Agent {
		a := stacktest.NewAgent(t, f.svc, id)
		stacktest.RunAgent(t, f.svc, a)
		return a
	}
	leaver, joiner := start("10.0.0.1_web01"), "10.0.0.3_web02"
	for _, tt := range []struct {
		name string
		args []string
	}{{"watch_resync", []string{"watch"}}, {"watch_resync_json", []string{"watch", "--json"}}} {
		proxy := stacktest.StartProxy(t, f.url)
		env := f.env()
		env["CC_SERVER"] = proxy.URL()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out := &stacktest.Buffer{}
		done := make(chan int)
		go func() {
			_, _, code := ccCtx(ctx, t, env, out, tt.args...)
			done <- code
		}()
		waitFor(t, out, "-- 2 online", `"event":"synced"`)
		proxy.HoldNew()
		proxy.Cut()
		waitFor(t, out, "stale: ", `"event":"stale"`)
		leaver.Close()
		stacktest.WaitOffline(t, f.svc, leaver.MachineID())
		joined := start(joiner)
		proxy.Resume()
		waitUntil(t, out, func(s string) bool {
			return strings.Contains(s, "online after the resync") || strings.Count(s, `"event":"synced"`) == 2
		})
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("%q: exit %d after Ctrl-C", tt.args, code)
		}
		golden(t, tt.name, staleRe.ReplaceAllString(out.String(), "${1}connection to the broker lost (REASON); reconnecting"))
		leaver, joiner = joined, leaver.MachineID()
	}
}

// TestWatchCommandExitsWhenRefused: the watching operator is removed; the
// broker closes its connection and refuses it back, and the watch exits
// with status 1 saying why, instead of waiting for ever.
func TestWatchCommandExitsWhenRefused(t *testing.T) {
	f := startFleet(t)
	env := map[string]string{"CC_SERVER": f.url, "CC_KEY": f.viewerKey}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := &stacktest.Buffer{}
	type result struct {
		stderr string
		code   int
	}
	done := make(chan result, 1)
	go func() {
		_, stderr, code := ccCtx(ctx, t, env, out, "watch")
		done <- result{stderr, code}
	}()
	waitFor(t, out, "-- 0 online")
	if _, stderr, code := cc(t, f.env(), "operators", "rm", "viewer"); code != exitOK {
		t.Fatalf("operators rm: exit %d: %s", code, stderr)
	}
	r := <-done
	if r.code != exitFailure || !strings.Contains(r.stderr, "start the watch again") {
		t.Errorf("exit %d, stderr %q; want 1 and how to go on", r.code, r.stderr)
	}
	if !strings.Contains(out.String(), "stale: ") {
		t.Errorf("the watch did not say it was stale before exiting:\n%s", out.String())
	}
}

// staleRe matches the reason of a stale record, which names the error the
// connection saw (EOF, a reset).
var staleRe = regexp.MustCompile(`(stale: |"reason":")connection to the broker lost[^\n"]*`)

// waitUntil waits until cond holds for out.
func waitUntil(t *testing.T, out *stacktest.Buffer, cond func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond(out.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("output never got there:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitFor waits until out holds one of the strings.
func waitFor(t *testing.T, out *stacktest.Buffer, any ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range any {
			if strings.Contains(out.String(), s) {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("output never held %q:\n%s", any, out.String())
}

func TestMachinesCommands(t *testing.T) {
	f := smallFleet(t)
	newSeed, newPub := operatorKey(t, 7)
	newKey, _ := nkeys.FromSeed(newSeed)
	for range 3 { // an unknown machine tries to join three times
		if nc, err := stacktest.Dial(f.url, newKey, "10.0.0.7_new"); err == nil {
			nc.Close()
			t.Fatal("10.0.0.7_new connected; want it refused")
		}
	}
	// Two keys try the id 10.0.0.9_twice: accepting it needs --pubkey.
	_, twinPub := operatorKey(t, 8)
	for _, n := range []byte{8, 6} {
		seed, _ := operatorKey(t, n)
		kp, _ := nkeys.FromSeed(seed)
		if nc, err := stacktest.Dial(f.url, kp, "10.0.0.9_twice"); err == nil {
			nc.Close()
			t.Fatal("10.0.0.9_twice connected; want it refused")
		}
	}
	_, otherPub := operatorKey(t, 4)
	_, sitePub := operatorKey(t, 3)
	// Site dc2's broker reported a key for a new id: it is accepted at
	// that site only, and only when --site names it (a site may plant a
	// key for an id the hub is about to add).
	_, reportedPub := operatorKey(t, 9)
	f.svc.Registry().RecordPendingAt("10.3.2.9_dc2-new", reportedPub, "203.0.113.9", "dc2", "not in the registry")
	steps := []struct {
		args []string
		code int
	}{
		{[]string{"machines", "pending"}, exitOK},
		{[]string{"machines", "accept", "10.3.2.9_dc2-new", "--site", "dc3"}, exitFailure},
		{[]string{"machines", "accept", "10.3.2.9_dc2-new"}, exitFailure},
		{[]string{"machines", "accept", "10.3.2.9_dc2-new", "--site", "dc2"}, exitOK},
		{[]string{"machines", "accept", "10.0.0.9_twice"}, exitFailure},
		{[]string{"machines", "accept", "10.0.0.9_twice", "--pubkey", "UX"}, exitFailure},
		{[]string{"machines", "accept", "10.0.0.9_twice", "--pubkey", twinPub[:12]}, exitOK},
		{[]string{"machines", "accept", "10.0.0.7_new"}, exitOK},
		{[]string{"machines", "accept", "10.0.0.7_new"}, exitFailure},
		{[]string{"machines", "add", "10.0.0.8_web04", "--pubkey", newPub, "--label", "role=web", "--label", "env=prod"}, exitOK},
		{[]string{"machines", "add", "10.0.0.8_web04", "--pubkey", otherPub}, exitFailure},
		{[]string{"machines", "add", "10.0.0.8_web04", "--pubkey", otherPub, "--label", "role=web", "--replace"}, exitOK},
		{[]string{"machines", "label", "10.0.0.8_web04", "location=New-Jersey", "--rm-label", "env"}, exitOK},
		{[]string{"machines", "rm", "10.0.0.1_web01"}, exitOK},
		{[]string{"machines", "add", "10.3.2.7_dc2-web", "--pubkey", sitePub, "--site", "dc 2"}, exitUsage},
		{[]string{"machines", "add", "10.3.2.7_dc2-web", "--pubkey", sitePub, "--site", "dc2"}, exitOK},
		{[]string{"machines", "ls"}, exitOK},
	}
	var log strings.Builder
	for _, s := range steps {
		stdout, stderr, code := cc(t, f.env(), s.args...)
		if code != s.code {
			t.Errorf("%q: exit %d, want %d: %s", s.args, code, s.code, stderr)
		}
		log.WriteString("$ cc-bench " + strings.Join(s.args, " ") + "\n" + stdout + stderr)
	}
	golden(t, "machines", log.String())

	// A viewer may list but not change.
	viewer := map[string]string{"CC_SERVER": f.url, "CC_KEY": f.viewerKey}
	if _, _, code := cc(t, viewer, "machines", "ls", "--json"); code != exitOK {
		t.Errorf("viewer ls: exit %d", code)
	}
	_, stderr, code := cc(t, viewer, "machines", "rm", "10.0.0.2_web02")
	if code != exitFailure || !strings.Contains(stderr, "403") || !strings.Contains(stderr, "cc-bench whoami") {
		t.Errorf("viewer rm: exit %d, %q", code, stderr)
	}
}

func TestOperatorsCommands(t *testing.T) {
	f := startFleet(t)
	_, bobPub := operatorKey(t, 5)
	var log strings.Builder
	for _, args := range [][]string{
		{"whoami"},
		{"operators", "add", "bob", "--pubkey", bobPub, "--role", "viewer"},
		{"operators", "ls"},
		{"operators", "rm", "bob"},
	} {
		stdout, stderr, code := cc(t, f.env(), args...)
		if code != exitOK {
			t.Errorf("%q: exit %d: %s", args, code, stderr)
		}
		log.WriteString("$ cc-bench " + strings.Join(args, " ") + "\n" + strings.ReplaceAll(stdout, f.url, "URL") + stderr)
	}
	golden(t, "operators", log.String())
	stdout, _, _ := cc(t, f.env(), "whoami", "--json")
	if objs := jsonObjects(t, stdout); len(objs) != 1 || objs[0]["operator"] != "admin" || objs[0]["role"] != "admin" {
		t.Errorf("whoami --json: %v", objs)
	}
}
