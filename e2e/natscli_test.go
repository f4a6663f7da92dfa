package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go/micro"
)

// natsCLI finds the nats CLI (github.com/nats-io/natscli v0.5.0): on PATH or
// in $GOPATH/bin. In CI its absence fails the test; elsewhere it skips.
func natsCLI(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "nats")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	const msg = "the nats CLI is not installed: go install github.com/nats-io/natscli/nats@v0.5.0"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestNatsCLI drives the real nats CLI the way docs/DEPLOY.md shows: an
// operator's nkey and its inbox prefix, `nats req` on a function subject,
// the presence snapshot, and `nats micro ls/info/stats` listing the fleet.
func TestNatsCLI(t *testing.T) {
	bin := natsCLI(t)
	svc := startControl(t, "")
	for _, id := range []string{"10.0.0.5_web01", "10.0.0.6_web02"} {
		startAgent(t, svc, id, true)
		stacktest.WaitFor(t, id+" ONLINE", 5*time.Second, func() bool { return stacktest.Online(svc, id) })
	}
	seed := newOperator(t, svc, "cli", "admin")
	pub := stacktest.Pub(t, stacktest.LoadKey(t, seed))
	home := t.TempDir()
	natsIn := func(inbox string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		base := []string{"--server", svc.ClientURL(), "--nkey", seed, "--inbox-prefix", inbox, "--timeout", "5s"}
		cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
		// Keep the user's nats contexts out of it.
		cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "NATS_CONTEXT=")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	nats := func(args ...string) (string, error) { return natsIn(fleet.ControlInbox(pub), args...) }
	// A call to one machine: the inbox prefix names it, so the machine
	// may answer there (and only it may).
	web01 := fleet.DirectInbox(pub, "10.0.0.5_web01")
	// Discovery answers come under the operator's discovery inbox.
	discovery := fleet.DiscoveryInbox(pub)
	mustHave := func(out string, err error, want ...string) {
		t.Helper()
		if err != nil {
			t.Fatalf("nats: %v\n%s", err, out)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("nats output lacks %q:\n%s", w, out)
			}
		}
	}

	out, err := natsIn(web01, "req", "sys.commandControl.fn.10~0~0~5_web01.current-load."+pub, "{}")
	mustHave(out, err, `"load1"`, "Cc-Machine: 10.0.0.5_web01")

	out, err = natsIn(web01, "req", "sys.commandControl.fn.10~0~0~5_web01.nope."+pub, "{}")
	mustHave(out, err, "Nats-Service-Error-Code: 404")

	// With the plain operator inbox no agent may answer; the control
	// service says what the inbox must be.
	out, err = nats("req", "sys.commandControl.fn.10~0~0~5_web01.current-load."+pub, "{}")
	mustHave(out, err, "Nats-Service-Error-Code: 400", "--inbox-prefix "+fleet.OperatorInbox(pub))

	out, err = nats("req", fleet.PresenceSnapshotSubject, "")
	mustHave(out, err, "10.0.0.5_web01", "10.0.0.6_web02")

	out, err = natsIn(discovery, "micro", "ls")
	mustHave(out, err, fleet.AgentServiceName, fleet.ControlServiceName)

	// micro ls shows one row per instance: every agent is one.
	out, err = natsIn(discovery, "micro", "ls", "--json")
	mustHave(out, err, "10.0.0.5_web01", "10.0.0.6_web02")

	out, err = natsIn(discovery, "micro", "info", fleet.AgentServiceName)
	mustHave(out, err, "commandcontrol agent on 10.0.0.", "sys.commandControl.all.*.*")

	out, err = natsIn(discovery, "micro", "stats", fleet.AgentServiceName, "--json")
	mustHave(out, err, `"num_requests"`)

	// Without the inbox prefix the broker refuses the reply subscription:
	// one operator can never read another's replies.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--server", svc.ClientURL(), "--nkey", seed, "--timeout", "2s",
		"req", "sys.commandControl.fn.10~0~0~5_web01.current-load."+pub, "{}")
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "NATS_CONTEXT=")
	b, _ := cmd.CombinedOutput()
	if !strings.Contains(string(b), "Permissions Violation") || strings.Contains(string(b), "load1") {
		t.Errorf("nats req without --inbox-prefix: want a permissions violation and no reply:\n%s", b)
	}
}

// TestNatsCLIMicroStats: `nats micro stats cc-agent` shows what an agent
// did. After known calls to one agent — successes (one of them a
// broadcast), function errors and refusals (429 past the caller's rate)
// — the real nats CLI shows each endpoint's requests and errors, the last
// error, and a processing time that is the functions' known duration:
// each function moves the agent's clock by a fixed step (nothing else
// moves it), so the times are exact.
func TestNatsCLIMicroStats(t *testing.T) {
	bin := natsCLI(t)
	svc := startControl(t, "")
	const id = "10.0.7.1_stats"
	const step = 1500 * time.Millisecond
	const ok, failed, refused = 3, 2, 2
	// The agent's clock moves only when a function moves it.
	start := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	var moved atomic.Int64
	now := func() time.Time { return start.Add(time.Duration(moved.Load())) }
	tick := stacktest.Func("tick", func(context.Context, functions.Args) (any, error) {
		moved.Add(int64(step))
		return "done", nil
	})
	boom := stacktest.Func("boom", func(context.Context, functions.Args) (any, error) {
		moved.Add(int64(step))
		return nil, fleet.Errorf(fleet.CodeInternal, "boom failed")
	})
	// A burst of exactly the calls that run; the rate (one call in 1,000
	// s, while the clock moves 9 s) refuses every one after them.
	startLimitedAgent(t, svc, id, agent.Config{CallerRate: 0.001, CallerBurst: ok + failed + 1, Now: now}, tick, boom)
	seed := newOperator(t, svc, "stats", fleet.RoleAdmin)
	op := operatorConn(t, svc.ClientURL(), seed)

	expect := func(fn string, want int) {
		t.Helper()
		m, err := stacktest.Request(op, id, fn, nil, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := errorCode(m); got != want {
			t.Fatalf("%s: got code %d (%s), want %d", fn, got, m.Header.Get(fleet.HeaderError), want)
		}
	}
	for range ok {
		expect("tick", 0)
	}
	for range failed {
		expect("boom", fleet.CodeInternal)
	}
	sub, err := stacktest.Broadcast(op, "tick", nil)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || errorCode(m) != 0 {
		t.Fatalf("broadcast: %v", err)
	}
	for range refused {
		expect("tick", fleet.CodeTooManyRequests)
	}

	pub, _ := stacktest.LoadKey(t, seed).PublicKey()
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--server", svc.ClientURL(), "--nkey", seed, "--inbox-prefix", fleet.DiscoveryInbox(pub),
		"--timeout", "2s", "micro", "stats", fleet.AgentServiceName, "--json")
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "NATS_CONTEXT=")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nats micro stats: %v\n%s", err, out)
	}
	var all []micro.Stats
	if err := json.Unmarshal(out, &all); err != nil || len(all) != 1 {
		t.Fatalf("nats micro stats --json: want one agent's stats, got %v:\n%s", err, out)
	}
	st := all[0]
	if st.Metadata["machine"] != id || !st.Started.Equal(start) {
		t.Errorf("stats of %q started %s, want %s started %s", st.Metadata["machine"], st.Started, id, start)
	}
	eps := map[string]*micro.EndpointStats{}
	for _, e := range st.Endpoints {
		eps[e.Name] = e
	}
	call, bc := eps[fleet.AgentCallEndpoint], eps[fleet.AgentBroadcastEndpoint]
	if call == nil || bc == nil {
		t.Fatalf("endpoints: %s", out)
	}
	// Refusals are answered at once: no time passes on the agent's clock.
	if call.NumRequests != ok+failed+refused || call.NumErrors != failed+refused {
		t.Errorf("call endpoint: %d requests, %d errors; want %d, %d:\n%s", call.NumRequests, call.NumErrors, ok+failed+refused, failed+refused, out)
	}
	if want := (ok + failed) * step; call.ProcessingTime != want || call.AverageProcessingTime != want/(ok+failed+refused) {
		t.Errorf("call endpoint: processing %s (average %s), want %s (%s)", call.ProcessingTime, call.AverageProcessingTime, want, want/(ok+failed+refused))
	}
	if !strings.HasPrefix(call.LastError, "429:") {
		t.Errorf("call endpoint: last error %q, want the 429", call.LastError)
	}
	if bc.NumRequests != 1 || bc.NumErrors != 0 || bc.ProcessingTime != step || bc.AverageProcessingTime != step {
		t.Errorf("broadcast endpoint: %+v, want one request of %s", *bc, step)
	}
}
