package cli

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// batchFleet has five machines answering restart; the ones in fail
// answer an error. calls lists the machines whose restart ran.
func batchFleet(t *testing.T, fail ...string) (*testFleet, func() []string) {
	f := startFleet(t)
	var mu sync.Mutex
	var calls []string
	for _, id := range []string{"10.0.0.1_a", "10.0.0.2_b", "10.0.0.3_c", "10.0.0.4_d", "10.0.0.5_e"} {
		failing := strings.Contains(strings.Join(fail, " "), id)
		f.agent(id, map[string]string{"role": "web"}, stacktest.Func("restart", func(context.Context, functions.Args) (any, error) {
			mu.Lock()
			calls = append(calls, id)
			mu.Unlock()
			if failing {
				return nil, fleet.Errorf(fleet.CodeInternal, "restart failed")
			}
			return map[string]any{"restarted": true}, nil
		}))
	}
	return f, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string{}, calls...)
	}
}

// TestCallBatchCommand: --batch 2 calls five machines in three batches,
// saying so on stderr; a failure in the first batch stops the call
// there, the rest listed not-called, exit 1; --batch 40% with --json.
func TestCallBatchCommand(t *testing.T) {
	f, calls := batchFleet(t, "10.0.0.2_b")
	stdout, stderr, code := cc(t, f.env(), "call", "restart", "--batch", "2", "--timeout", "10s")
	if code != exitFailure {
		t.Errorf("exit %d, want 1: %s", code, stderr)
	}
	golden(t, "call_batch_stop", stdout+"--- stderr\n"+stderr)
	if got := calls(); len(got) != 2 {
		t.Errorf("ran on %q, want the first batch only", got)
	}

	// --batch-continue goes past the failure: all five called, exit 1.
	stdout, stderr, code = cc(t, f.env(), "call", "restart", "--batch", "2", "--batch-continue", "--timeout", "10s")
	if code != exitFailure {
		t.Errorf("--batch-continue: exit %d, want 1: %s", code, stderr)
	}
	golden(t, "call_batch_continue", stdout+"--- stderr\n"+stderr)
	if got := calls(); len(got) != 2+5 {
		t.Errorf("ran %d times, want 2 then all 5", len(got))
	}

	// A machine that does not answer stops the call too.
	stdout, stderr, code = cc(t, f.env(), "call", "restart", "--batch", "1", "--machine", "10.0.0.0_gone", "--machine", "10.0.0.1_a", "--timeout", "5s")
	if code != exitFailure || !strings.Contains(stdout, "10.0.0.0_gone  no response") || !strings.Contains(stdout, "10.0.0.1_a     not called") {
		t.Errorf("no response: exit %d, want 1 and a_ not called:\n%s%s", code, stdout, stderr)
	}

	// A selection without the failing machine, with a wait: exit 0.
	stdout, stderr, code = cc(t, f.env(), "call", "restart", "--batch", "2", "--batch-wait", "1ms", "--where", "machine!=10.0.0.2_b", "--timeout", "10s")
	if code != exitOK {
		t.Errorf("exit %d, want 0: %s", code, stderr)
	}
	golden(t, "call_batch", stdout+"--- stderr\n"+stderr)

	stdout, stderr, code = cc(t, f.env(), "call", "restart", "--batch", "40%", "--json", "--timeout", "10s")
	if code != exitFailure {
		t.Errorf("--json: exit %d, want 1: %s", code, stderr)
	}
	status := map[string]any{}
	for _, o := range jsonObjects(t, stdout) {
		status[o["machine"].(string)] = o["status"]
	}
	want := map[string]any{"10.0.0.1_a": "ok", "10.0.0.2_b": "error", "10.0.0.3_c": "not-called", "10.0.0.4_d": "not-called", "10.0.0.5_e": "not-called"}
	if len(status) != len(want) {
		t.Errorf("--json: got %v, want %v", status, want)
	}
	for k, v := range want {
		if status[k] != v {
			t.Errorf("--json: %s is %v, want %v", k, status[k], v)
		}
	}
	if strings.Count(stderr, "batch 1/3") != 3 || !strings.Contains(stderr, "stopping: ") {
		t.Errorf("--json: stderr %q, want batch 1/3 started, done and stopping", stderr)
	}
}

func TestCallBatchUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"call", "x", "--batch-wait", "5s"}, "--batch-wait and --batch-continue need --batch"},
		{[]string{"call", "x", "--batch-continue"}, "need --batch"},
		{[]string{"call", "x", "--batch", "0"}, `--batch: batch size "0"`},
		{[]string{"call", "x", "--batch", "150%"}, "at most 100"},
		{[]string{"call", "x", "--batch", "NaN%"}, `--batch: batch size "NaN%": want a percentage`},
		{[]string{"call", "x", "--batch", "Inf%"}, "at most 100"},
		{[]string{"call", "x", "--batch", "2", "--batch-wait", "-1s"}, "--batch-wait -1s: want 0 or more"},
		{[]string{"call", "x", "--batch", "2", "--sessions"}, "cannot be made in batches"},
	} {
		_, stderr, code := cc(t, map[string]string{}, tt.args...)
		if code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tt.args, code, stderr, tt.want)
		}
	}
}
