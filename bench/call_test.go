package bench_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
)

// generous is far below the calls' 10 s deadline and far above what a
// loaded machine needs; it tells "ended at the last reply" from "ran into
// the deadline" without a tight timing assertion.
const generous = 5 * time.Second

func machines(rs []bench.Reply) []string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.Machine)
	}
	return ids
}

func TestCallBroadcastEndsAtLastReply(t *testing.T) {
	f := startFleet(t)
	limit := functions.Arg{Name: "limit", Type: functions.TypeString}
	for _, id := range []string{"10.0.0.1_web01", "10.0.0.2_web02", "10.0.0.3_db01"} {
		f.agent(id, map[string]string{"role": "web"}, stacktest.Echo("current-load", id, limit))
	}
	c := f.connect(f.Admin)
	res, err := c.Call(testCtx(t), "current-load", map[string]any{"limit": "10"}, bench.CallOptions{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Took > generous || res.TimedOut {
		t.Errorf("call took %v (timed out: %v); want it to end at the last reply", res.Took, res.TimedOut)
	}
	if res.Expected != 3 || res.NumOK != 3 || !res.AllOK() || len(res.NoResponse) != 0 || len(res.Unexpected) != 0 {
		t.Errorf("got %+v, want 3 expected, 3 ok", res.Summary)
	}
	var got struct {
		Fn   string         `json:"fn"`
		Args map[string]any `json:"args"`
	}
	if err := json.Unmarshal(res.Replied[0].Result, &got); err != nil || got.Fn != "current-load" || got.Args["limit"] != "10" {
		t.Errorf("result %s (err %v): want fn current-load and args {limit: 10}", res.Replied[0].Result, err)
	}
}

func TestCallSelectionNoResponseAndErrors(t *testing.T) {
	f := startFleet(t)
	f.agent("10.0.0.1_web01", map[string]string{"role": "web"}, stacktest.Result("current-load", map[string]any{"load1": 12.5}))
	f.agent("10.0.0.2_web02", map[string]string{"role": "web"}, stacktest.Fail("current-load", fleet.CodeInternal, "boom"))
	f.agent("10.0.0.3_web03", map[string]string{"role": "web"}, stacktest.Silent(t, "current-load"))
	f.agent("10.0.0.4_db01", map[string]string{"role": "db"}, stacktest.Echo("current-load", "10.0.0.4_db01"))
	c := f.connect(f.Admin)

	sel, err := bench.ParseSelector("role=web")
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Call(testCtx(t), "current-load", nil, bench.CallOptions{Where: sel, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut {
		t.Errorf("TimedOut = false; a silent machine should make the deadline end the call")
	}
	if got, want := res.NoResponse, []string{"10.0.0.3_web03"}; !reflect.DeepEqual(got, want) {
		t.Errorf("no response = %q, want %q", got, want)
	}
	if res.Expected != 3 || res.NumOK != 1 || res.NumError != 1 || res.AllOK() {
		t.Errorf("got %+v, want 3 expected, 1 ok, 1 error", res.Summary)
	}
	for _, r := range res.Replied {
		switch r.Machine {
		case "10.0.0.1_web01":
			if r.Status != bench.StatusOK || string(r.Result) != `{"load1":12.5}` {
				t.Errorf("web01: got %s %s", r.Status, r.Result)
			}
		case "10.0.0.2_web02":
			if r.Status != bench.StatusError || r.Err == nil || r.Err.Code != 500 || r.Err.Description != "boom" {
				t.Errorf("web02: got %s %v, want error 500 boom", r.Status, r.Err)
			}
		default:
			t.Errorf("unexpected reply from %s", r.Machine)
		}
	}
}

// TestCallOfflineMachineEndsAtOnce: a selected machine goes offline after
// the caller's presence snapshot was answered but before the call is
// published. Nobody serves its subject any more, so the call ends at the
// first re-send (the broker's second "no responders") with it in the
// no-response set; it does not wait for the deadline.
func TestCallOfflineMachineEndsAtOnce(t *testing.T) {
	f := startFleet(t)
	f.agent("10.0.0.1_web01", nil)
	gone := stacktest.StartAgent(t, f.Svc, "10.0.0.9_gone", nil)
	c := f.connect(f.Admin, stacktest.WithHooks(stacktest.Hook{
		Sent: fleet.FnSubject("10.0.0.9_gone", "machine-info", stacktest.PublicKey(f.Admin)),
		Fn: func() {
			gone.Close()
			if err := stacktest.Await(f.Svc, "10.0.0.9_gone", false); err != nil {
				t.Error(err)
			}
		},
	}))
	sel, _ := bench.ParseSelector("hostname=gone")
	res, err := c.Call(testCtx(t), "machine-info", nil, bench.CallOptions{Where: sel, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Expected != 1 || res.Took > generous || res.TimedOut {
		t.Errorf("%+v in %v; the no-responders status should end the call", res.Summary, res.Took)
	}
	if !reflect.DeepEqual(res.NoResponse, []string{"10.0.0.9_gone"}) {
		t.Errorf("no response = %q", res.NoResponse)
	}
}

// TestCallUnexpectedResponder: a registered machine comes online after the
// caller's presence snapshot was answered but before its broadcast is
// published. It answers the broadcast and is reported as unexpected.
func TestCallUnexpectedResponder(t *testing.T) {
	f := startFleet(t)
	// The expected agent answers late, so the call is still open when the
	// unexpected one answers.
	f.agent("10.0.0.1_web01", nil, stacktest.Slow("machine-info", 500*time.Millisecond, "slow"))
	stacktest.RegisterMachine(t, f.Svc, "10.0.0.2_late", nil)
	late := stacktest.NewAgent(t, f.Svc, "10.0.0.2_late", stacktest.Echo("machine-info", "10.0.0.2_late"))
	c := f.connect(f.Admin, stacktest.WithHooks(stacktest.Hook{
		Sent: fleet.AllSubject("machine-info", stacktest.PublicKey(f.Admin)),
		Fn: func() {
			if err := stacktest.Launch(t.Context(), f.Svc, late); err != nil {
				t.Error(err)
			}
		},
	}))

	var streamed []bench.Reply
	sum, err := c.Stream(testCtx(t), "machine-info", nil, bench.CallOptions{Timeout: 10 * time.Second}, func(r bench.Reply) {
		streamed = append(streamed, r)
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Expected != 1 || sum.NumOK != 1 || !sum.AllOK() || sum.NumUnexpected != 1 || sum.Took > generous {
		t.Errorf("summary %+v, want 1 expected, 1 ok, 1 unexpected", sum)
	}
	if got, want := machines(streamed), []string{"10.0.0.2_late", "10.0.0.1_web01"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("streamed %q, want %q", got, want)
	}
	if !streamed[0].Unexpected || streamed[0].Status != bench.StatusOK || streamed[1].Unexpected {
		t.Errorf("streamed %+v: want only the first marked unexpected", streamed)
	}
}

// TestCallReachesMachineNotYetSubscribed: the call goes out while a machine
// cannot be reached yet (as just after it reconnected, or moved to another
// broker of a cluster): "no responders" comes back (here from the control
// service's call watcher, which knows the machine is not ONLINE). The
// machine is up before the re-send, which reaches it.
func TestCallReachesMachineNotYetSubscribed(t *testing.T) {
	// The hook holds the client's reader while the agent starts; the
	// re-send waits long enough for that even on a loaded machine.
	t.Cleanup(bench.SetFirstResend(2 * time.Second))
	f := startFleet(t)
	stacktest.RegisterMachine(t, f.Svc, "10.0.0.2_late", nil)
	late := stacktest.NewAgent(t, f.Svc, "10.0.0.2_late", stacktest.Echo("machine-info", "10.0.0.2_late"))
	c := f.connect(f.Admin, stacktest.WithHooks(stacktest.Hook{
		Received: "No Responders",
		Fn: func() {
			if err := stacktest.Launch(t.Context(), f.Svc, late); err != nil {
				t.Error(err)
				return
			}
			if err := late.Conn().Flush(); err != nil { // its subscriptions are in
				t.Error(err)
			}
		},
	}))
	res, err := c.Call(testCtx(t), "machine-info", nil, bench.CallOptions{
		Machines: []string{"10.0.0.2_late"}, Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.AllOK() || res.Resent < 1 || res.TimedOut || res.Took > generous {
		t.Fatalf("got %+v in %v: want the re-send answered", res.Summary, res.Took)
	}
}

// TestCallIDRunsOnce: copies of one call (the broadcast and a re-send on
// the machine's own subject) run the function once and are answered once;
// another call id runs again; an oversized id is refused.
func TestCallIDRunsOnce(t *testing.T) {
	nc, key, sub, runs := countingMachine(t, "count")
	sent := 0
	send := func(subject, target, id string) {
		t.Helper()
		sent++
		m := nats.NewMsg(subject)
		m.Reply = fleet.CallReply(key, target, id, sent)
		m.Header.Set(fleet.HeaderCallID, id)
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	web01 := fleet.MachineToken("10.0.0.1_web01")
	send(fleet.AllSubject("count", key), fleet.ReplyToAll, "call-1")
	send(fleet.FnSubject("10.0.0.1_web01", "count", key), web01, "call-1")
	send(fleet.FnSubject("10.0.0.1_web01", "count", key), web01, "call-2")
	send(fleet.FnSubject("10.0.0.1_web01", "count", key), web01, strings.Repeat("x", fleet.MaxCallIDLen+1))
	got := nextReplies(t, sub, 3, false)
	if want := []string{"1", "2", "400"}; !slices.Equal(got, want) {
		t.Fatalf("replies %q, want %q", got, want)
	}
	if m, err := sub.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatalf("a fourth reply: %q %v", m.Data, m.Header)
	}
	if n := runs.Load(); n != 2 {
		t.Fatalf("the function ran %d times, want 2", n)
	}
}

// countingMachine starts machine 10.0.0.1_web01 with function fn, which
// answers how many times it ran, and an admin's connection subscribed to
// its whole inbox.
func countingMachine(t *testing.T, fn string) (nc *nats.Conn, key string, sub *nats.Subscription, runs *atomic.Int32) {
	t.Helper()
	f := startFleet(t)
	runs = new(atomic.Int32)
	f.agent("10.0.0.1_web01", nil, stacktest.Func(fn, func(context.Context, functions.Args) (any, error) {
		return runs.Add(1), nil
	}))
	nc = f.connect(f.Admin).Conn()
	key = nc.Opts.Nkey
	sub, err := nc.SubscribeSync(fleet.OperatorInboxWildcard(key))
	if err != nil {
		t.Fatal(err)
	}
	return nc, key, sub, runs
}

// nextReplies reads n replies from sub, sorted: each its body, or its
// error code (with the description when withDesc).
func nextReplies(t *testing.T, sub *nats.Subscription, n int, withDesc bool) []string {
	t.Helper()
	var got []string
	for range n {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		code := m.Header.Get(fleet.HeaderErrorCode)
		switch {
		case code != "" && withDesc:
			got = append(got, code+" "+m.Header.Get(fleet.HeaderError))
		case code != "":
			got = append(got, code)
		default:
			got = append(got, string(m.Data))
		}
	}
	slices.Sort(got)
	return got
}

// TestCallIDMustBeTheCallToken: copies under one reply call token with
// other call ids (each would run, and the audit, which tells calls apart
// by the token, would record one) are refused 400 without running; the
// copy whose id is the token runs once.
func TestCallIDMustBeTheCallToken(t *testing.T) {
	nc, key, sub, runs := countingMachine(t, "bump")
	web01 := fleet.MachineToken("10.0.0.1_web01")
	for i, id := range []string{"tok", "other-1", "other-2"} {
		m := nats.NewMsg(fleet.FnSubject("10.0.0.1_web01", "bump", key))
		m.Reply = fleet.CallReply(key, web01, "tok", i)
		m.Header.Set(fleet.HeaderCallID, id)
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	got := nextReplies(t, sub, 3, true)
	if len(got) != 3 || got[0] != "1" || !strings.HasPrefix(got[1], "400 ") || !strings.HasPrefix(got[2], "400 ") ||
		!strings.Contains(got[1], "is not the call token") {
		t.Fatalf("replies %q, want one run and two 400s naming the call token", got)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the function ran %d times, want 1", n)
	}
}

func TestCallExplicitMachines(t *testing.T) {
	f := startFleet(t)
	f.agent("10.0.0.1_web01", nil)
	c := f.connect(f.Admin)
	res, err := c.Call(testCtx(t), "machine-info", nil, bench.CallOptions{
		Machines: []string{"10.0.0.1_web01", "10.0.0.2_nowhere"}, Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Took > generous || res.NumOK != 1 || !reflect.DeepEqual(res.NoResponse, []string{"10.0.0.2_nowhere"}) {
		t.Errorf("got %+v in %v", res.Summary, res.Took)
	}
}

func TestCallNothingSelected(t *testing.T) {
	f := startFleet(t)
	c := f.connect(f.Admin)
	res, err := c.Call(testCtx(t), "machine-info", nil, bench.CallOptions{})
	if !errors.Is(err, bench.ErrNoMatch) || err.Error() != "call machine-info: no machine is ONLINE" {
		t.Errorf("nobody ONLINE: got %v, want ErrNoMatch", err)
	}
	if res == nil || res.Expected != 0 || res.TimedOut {
		t.Fatalf("got %+v, want an empty, complete call", res)
	}
	f.agent("10.0.0.1_web01", map[string]string{"role": "web"})
	sel, err := bench.ParseSelector("role=db")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Call(testCtx(t), "machine-info", nil, bench.CallOptions{Where: sel})
	if !errors.Is(err, bench.ErrNoMatch) || err.Error() != "call machine-info: no ONLINE machine matches role=db" {
		t.Errorf("nobody selected: got %v, want ErrNoMatch naming role=db", err)
	}
}

// TestCallDeniedByBroker: the user JWT the callout issues a viewer lets it
// publish read-only functions only.
func TestCallDeniedByBroker(t *testing.T) {
	f := startFleet(t)
	f.agent("10.0.0.1_web01", nil, stacktest.Result("reboot", "rebooting"))
	c := f.connect(f.Viewer)
	res, err := c.Call(testCtx(t), "reboot", nil, bench.CallOptions{Timeout: 10 * time.Second})
	var fe *fleet.Error
	if !errors.As(err, &fe) || fe.Code != fleet.CodeForbidden {
		t.Fatalf("err = %v, want a 403 *fleet.Error", err)
	}
	if res == nil || res.Took > generous || res.NumOK != 0 {
		t.Errorf("results %+v: want partial results, returned early, no reply", res)
	}
	if res, err := c.Call(testCtx(t), "current-load", nil, bench.CallOptions{Timeout: 10 * time.Second}); err != nil || !res.AllOK() {
		t.Errorf("allowed function: %+v, %v", res, err)
	}
}

func TestCallBadFunctionName(t *testing.T) {
	f := startFleet(t)
	c := f.connect(f.Admin)
	if _, err := c.Call(testCtx(t), "a.b", nil, bench.CallOptions{}); err == nil {
		t.Error("want an error for a function name with a dot")
	}
}
