package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/cmd/cc-bench/cli"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nkeys"
)

// TestAuditDurable: calls (operator, function, arguments, outcome per
// target), registry changes, refused attempts and refused connections are
// in the audit log, and still there after the control service restarts;
// cc-bench audit reads them.
func TestAuditDurable(t *testing.T) {
	data := t.TempDir()
	svc := startControl(t, data)
	fail := functions.FuncOf(functions.Spec{Name: "fail", Help: "fails", ReadOnly: true}, func(context.Context, functions.Args) (any, error) {
		return nil, fleet.Errorf(fleet.CodeUnavailable, "no source")
	})
	a1 := startAgent(t, svc, "10.0.0.1_web01", true, echoFn(), fail)
	a2 := startAgent(t, svc, "10.0.0.2_web02", true, echoFn(), fail)
	stacktest.WaitFor(t, "agents online", 5*time.Second, func() bool { return stacktest.Online(svc, a1.MachineID()) && stacktest.Online(svc, a2.MachineID()) })
	c, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	res, err := c.Call(ctx, "echo", map[string]any{"msg": "audit me"}, bench.CallOptions{Timeout: 5 * time.Second})
	if err != nil || res.NumOK != 2 {
		t.Fatalf("echo on all: %v %+v", err, res)
	}
	sel, _ := bench.ParseSelector("machine=10.0.0.2_web02")
	if _, err := c.Call(ctx, "fail", nil, bench.CallOptions{Where: sel, Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	// A machine that is not ONLINE: the call ends at once with no responders.
	start := time.Now()
	res, err = c.Call(ctx, "echo", nil, bench.CallOptions{Machines: []string{"10.0.0.9_gone"}, Timeout: 5 * time.Second})
	if err != nil || len(res.NoResponse) != 1 || time.Since(start) > 2*time.Second {
		t.Fatalf("call to an offline machine: %v %+v after %s", err, res, time.Since(start))
	}
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	if _, err := c.AddOperator(ctx, "victor", pub, fleet.RoleViewer); err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	viewer, err := bench.Connect(svc.ClientURL(), bench.WithSeed(seed))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := viewer.RemoveMachine(ctx, a1.MachineID()); err == nil {
		t.Fatal("viewer removed a machine")
	}
	viewer.Close()
	intruder, _ := nkeys.CreateUser()
	if _, err := connectAs(svc.ClientURL(), intruder, "10.6.6.6_intruder"); !isAuthErr(err) {
		t.Fatalf("intruder: %v", err)
	}

	check := func(recs []fleet.AuditRecord) string {
		var echo, failed, offline, added, denied, refused bool
		for _, r := range recs {
			switch {
			case r.Kind == fleet.AuditCall && r.Function == "echo" && r.Broadcast:
				echo = r.Operator == "admin" && r.OK == 2 && len(r.Outcomes) == 2 && strings.Contains(string(r.Args), "audit me")
			case r.Kind == fleet.AuditCall && r.Function == "fail":
				failed = r.Errors == 1 && len(r.Outcomes) == 1 && r.Outcomes[0].Machine == "10.0.0.2_web02" && r.Outcomes[0].Code == fleet.CodeUnavailable
			case r.Kind == fleet.AuditCall && r.Function == "echo" && !r.Broadcast:
				offline = r.NoResp == 1 && r.Outcomes[0].Machine == "10.0.0.9_gone"
			case r.Kind == fleet.AuditRegistry && r.Op == fleet.OpOperatorsAdd:
				added = r.Operator == "admin" && r.Error == "" && strings.Contains(string(r.Request), "victor")
			case r.Kind == fleet.AuditRegistry && r.Op == fleet.OpMachinesRemove:
				denied = r.Operator == "victor" && strings.Contains(r.Error, "403")
			case r.Kind == fleet.AuditRefused && r.Name == "10.6.6.6_intruder":
				refused = r.Key != "" && r.IP != "" && strings.Contains(r.Reason, "not in the registry")
			}
		}
		var missing []string
		for name, ok := range map[string]bool{"broadcast echo": echo, "failed call": failed, "offline call": offline,
			"operators.add": added, "viewer's refused machines.rm": denied, "refused connection": refused} {
			if !ok {
				missing = append(missing, name)
			}
		}
		return strings.Join(missing, ", ")
	}
	var recs []fleet.AuditRecord
	deadline := time.Now().Add(10 * time.Second)
	for {
		if recs, err = c.Audit(ctx, time.Time{}, 0); err != nil {
			t.Fatal(err)
		}
		missing := check(recs)
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(recs, "", " ")
			t.Fatalf("audit lacks: %s\n%s", missing, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.Close()

	// Restart the control service (its embedded broker and JetStream too).
	svc.Close()
	svc2 := startControl(t, data)
	c2, err := bench.Connect(svc2.ClientURL(), bench.WithSeedFile(svc2.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	after, err := c2.Audit(ctx, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if missing := check(after); missing != "" || len(after) < len(recs) {
		t.Fatalf("after a restart the audit lacks: %s (%d records, had %d)", missing, len(after), len(recs))
	}
	// Since and limit narrow it.
	if later, _ := c2.Audit(ctx, time.Now().Add(time.Hour), 0); len(later) != 0 {
		t.Fatalf("records from the future: %d", len(later))
	}
	if two, _ := c2.Audit(ctx, time.Time{}, 2); len(two) != 2 {
		t.Fatalf("limit 2: got %d", len(two))
	}

	// cc-bench audit --since 1h --json prints one record per line.
	var out, errOut bytes.Buffer
	code := cli.Run([]string{"--server", svc2.ClientURL(), "--key", svc2.AdminKeyPath(), "audit", "--since", "1h", "--json"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("cc-bench audit: exit %d: %s", code, errOut.String())
	}
	var lines []fleet.AuditRecord
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r fleet.AuditRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("cc-bench audit line %q: %v", l, err)
		}
		lines = append(lines, r)
	}
	if missing := check(lines); missing != "" {
		t.Fatalf("cc-bench audit --json lacks: %s", missing)
	}
	out.Reset()
	if code := cli.Run([]string{"--server", svc2.ClientURL(), "--key", svc2.AdminKeyPath(), "audit"}, &out, &errOut); code != 0 {
		t.Fatalf("cc-bench audit: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "echo on all") || !strings.Contains(out.String(), "2 ok, 0 error, 0 no-response") {
		t.Fatalf("cc-bench audit table:\n%s", out.String())
	}
	t.Logf("cc-bench audit:\n%s", out.String())
}

// startControlWithCallHook starts a control service whose call watcher
// sends each call record it writes to the returned channel.
func startControlWithCallHook(t *testing.T) (*controlsvc.Service, chan fleet.AuditRecord) {
	t.Helper()
	svc, err := controlsvc.New(controlsvc.Config{DataDir: t.TempDir(), Logger: stacktest.Logger(),
		Broker: broker.Config{Listen: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan fleet.AuditRecord, 16)
	svc.OnCall(func(r fleet.AuditRecord) { got <- r })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc, got
}

// TestCallHookSeesEveryCall: the call watcher's hook (what metrics use)
// gets one record per call with every target's outcome.
func TestCallHookSeesEveryCall(t *testing.T) {
	svc, got := startControlWithCallHook(t)
	a := startAgent(t, svc, "10.0.0.1_web01", true, echoFn())
	stacktest.WaitFor(t, "agent online", 5*time.Second, func() bool { return stacktest.Online(svc, a.MachineID()) })
	op := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	if _, err := stacktest.Request(op, a.MachineID(), "echo", []byte(`{"msg":"x"}`), 3*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.Function != "echo" || r.Operator != "admin" || len(r.Outcomes) != 1 || r.Outcomes[0].Status != fleet.OutcomeOK {
			t.Fatalf("hook record: %+v", r)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the hook saw no call")
	}
}

// TestCallRecordWithResends: the workbench re-sends a call to machines
// that have not answered; the call watcher counts each machine once. A
// slow machine that gets re-sent copies, and an offline one whose copies
// all get "no responders", leave a record with one outcome each, written
// when the call ends (not at the watcher's 35 s limit), and the slow
// function ran once.
func TestCallRecordWithResends(t *testing.T) {
	svc, got := startControlWithCallHook(t)
	var runs atomic.Int32
	slow := functions.FuncOf(functions.Spec{Name: "slow", Help: "slow", ReadOnly: true}, func(ctx context.Context, _ functions.Args) (any, error) {
		runs.Add(1)
		select {
		case <-time.After(1500 * time.Millisecond):
		case <-ctx.Done():
		}
		return "done", nil
	})
	quick := functions.FuncOf(functions.Spec{Name: "slow", Help: "quick here", ReadOnly: true}, func(context.Context, functions.Args) (any, error) {
		return "done", nil
	})
	var waits atomic.Int32
	wait1s := functions.FuncOf(functions.Spec{Name: "wait1s", Help: "takes a second", ReadOnly: true}, func(ctx context.Context, _ functions.Args) (any, error) {
		waits.Add(1)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
		return "done", nil
	})
	a1 := startAgent(t, svc, "10.0.0.1_web01", true, slow, wait1s)
	a2 := startAgent(t, svc, "10.0.0.2_web02", true, quick)
	stacktest.WaitFor(t, "agents online", 5*time.Second, func() bool { return stacktest.Online(svc, a1.MachineID()) && stacktest.Online(svc, a2.MachineID()) })
	c, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	record := func(what string) fleet.AuditRecord {
		t.Helper()
		select {
		case r := <-got:
			return r
		case <-time.After(5 * time.Second):
			t.Fatalf("no record of %s within 5 s of the call's end", what)
		}
		return fleet.AuditRecord{}
	}
	ctx := t.Context()
	res, err := c.Call(ctx, "slow", nil, bench.CallOptions{Timeout: 5 * time.Second})
	if err != nil || res.NumOK != 2 || res.Resent < 1 {
		t.Fatalf("broadcast with a slow machine: %v %+v (want 2 ok and a re-send)", err, res)
	}
	if r := record("the broadcast"); !r.Broadcast || r.Targets != 2 || r.OK != 2 || len(r.Outcomes) != 2 {
		t.Fatalf("broadcast record: %+v", r)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the slow function ran %d times", n)
	}

	// The same on one machine by name: the first copy and the re-sends go
	// to the same subject, each with a reply subject of its own (the broker
	// lets the agent answer a reply subject once; one sent twice would use
	// that up and the late answer would be refused).
	// The answer comes after the first re-send and before the second.
	res, err = c.Call(ctx, "wait1s", nil, bench.CallOptions{Machines: []string{a1.MachineID()}, Timeout: 5 * time.Second})
	if err != nil || res.NumOK != 1 || res.Resent < 1 {
		t.Fatalf("direct call to a slow machine: %v %+v (want ok after a re-send)", err, res)
	}
	if r := record("the direct call"); r.Broadcast || r.Targets != 1 || r.OK != 1 {
		t.Fatalf("direct record: %+v", r)
	}
	if n := waits.Load(); n != 1 {
		t.Fatalf("the function ran %d times", n)
	}

	res, err = c.Call(ctx, "slow", nil, bench.CallOptions{Machines: []string{"10.0.0.9_gone"}, Timeout: 5 * time.Second})
	if err != nil || len(res.NoResponse) != 1 {
		t.Fatalf("call to an offline machine: %v %+v", err, res)
	}
	if r := record("the offline call"); r.Targets != 1 || r.NoResp != 1 || r.Outcomes[0].Code != fleet.CodeUnavailable {
		t.Fatalf("offline record: %+v", r)
	}
}
