package bench_test

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// batchFleet is five machines whose "restart" records each call in a
// shared log; the machines in fail answer an error.
type batchFleet struct {
	*testFleet
	mu  sync.Mutex
	log []string
}

var fiveMachines = []string{"10.0.0.1_a", "10.0.0.2_b", "10.0.0.3_c", "10.0.0.4_d", "10.0.0.5_e"}

func startBatchFleet(t *testing.T, fail ...string) *batchFleet {
	f := &batchFleet{testFleet: startFleet(t)}
	for _, id := range fiveMachines {
		failing := false
		for _, x := range fail {
			failing = failing || x == id
		}
		f.agent(id, map[string]string{"role": "web"}, stacktest.Func("restart", func(context.Context, functions.Args) (any, error) {
			f.note("call " + id)
			if failing {
				return nil, fleet.Errorf(fleet.CodeInternal, "restart failed on %s", id)
			}
			return map[string]any{"restarted": id}, nil
		}))
	}
	return f
}

func (f *batchFleet) note(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, s)
}

func (f *batchFleet) logged() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string{}, f.log...)
}

// run calls restart in batches, noting each batch's start and end and
// each wait in the log, and returns the summary and the replies' statuses.
func (f *batchFleet) run(t *testing.T, b bench.Batch) (*bench.Summary, map[string]bench.Status) {
	t.Helper()
	defer bench.SetBatchSleep(func(_ context.Context, d time.Duration) error {
		f.note(fmt.Sprintf("wait %s", d))
		return nil
	})()
	b.Started = func(n, of int, machines []string) {
		f.note(fmt.Sprintf("batch %d/%d %s", n, of, strings.Join(machines, ",")))
	}
	b.Finished = func(n, of int, sum *bench.Summary) { f.note(fmt.Sprintf("batch %d/%d done: %s", n, of, sum)) }
	statuses := map[string]bench.Status{}
	c := f.connect(f.Admin)
	sum, err := c.CallBatches(testCtx(t), "restart", nil, bench.CallOptions{Timeout: 10 * time.Second}, b, func(r bench.Reply) {
		statuses[r.Machine] = r.Status
	})
	if err != nil {
		t.Fatal(err)
	}
	return sum, statuses
}

// batchLog keeps the log's batch and wait lines, and its calls sorted
// within each batch (the machines of a batch run in any order).
func batchLog(log []string) string {
	var out, calls []string
	flush := func() {
		if len(calls) > 0 {
			slices.Sort(calls)
			out = append(out, strings.Join(calls, " "))
			calls = nil
		}
	}
	for _, l := range log {
		if strings.HasPrefix(l, "call ") {
			calls = append(calls, l)
			continue
		}
		flush()
		out = append(out, l)
	}
	flush()
	return strings.Join(out, "\n")
}

// TestCallBatchesInOrder: five machines in batches of 2 are three
// batches, each called after the one before it completed and the wait.
func TestCallBatchesInOrder(t *testing.T) {
	f := startBatchFleet(t)
	sum, statuses := f.run(t, bench.Batch{Size: 2, Wait: 3 * time.Second})
	want := `batch 1/3 10.0.0.1_a,10.0.0.2_b
call 10.0.0.1_a call 10.0.0.2_b
batch 1/3 done: 2 expected: 2 ok, 0 error, 0 no response
wait 3s
batch 2/3 10.0.0.3_c,10.0.0.4_d
call 10.0.0.3_c call 10.0.0.4_d
batch 2/3 done: 2 expected: 2 ok, 0 error, 0 no response
wait 3s
batch 3/3 10.0.0.5_e
call 10.0.0.5_e
batch 3/3 done: 1 expected: 1 ok, 0 error, 0 no response`
	if got := batchLog(f.logged()); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if !sum.AllOK() || sum.Expected != 5 || sum.NumOK != 5 || len(statuses) != 5 {
		t.Errorf("summary %s, %d replies; want 5 ok", sum, len(statuses))
	}
}

// TestCallBatchesStopOnError: a machine of the first batch fails; the
// call stops there and the three machines left are not called (their
// function never ran), unless Continue.
func TestCallBatchesStopOnError(t *testing.T) {
	f := startBatchFleet(t, "10.0.0.2_b")
	sum, statuses := f.run(t, bench.Batch{Size: 2})
	want := `batch 1/3 10.0.0.1_a,10.0.0.2_b
call 10.0.0.1_a call 10.0.0.2_b
batch 1/3 done: 2 expected: 1 ok, 1 error, 0 no response`
	if got := batchLog(f.logged()); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if got := sum.String(); got != "5 expected: 1 ok, 1 error, 0 no response, 3 not called" || sum.AllOK() {
		t.Errorf("summary %q (all ok %v)", got, sum.AllOK())
	}
	if want := []string{"10.0.0.3_c", "10.0.0.4_d", "10.0.0.5_e"}; !reflect.DeepEqual(sum.NotCalled, want) {
		t.Errorf("not called %q, want %q", sum.NotCalled, want)
	}
	wantStatus := map[string]bench.Status{"10.0.0.1_a": bench.StatusOK, "10.0.0.2_b": bench.StatusError,
		"10.0.0.3_c": bench.StatusNotCalled, "10.0.0.4_d": bench.StatusNotCalled, "10.0.0.5_e": bench.StatusNotCalled}
	if !reflect.DeepEqual(statuses, wantStatus) {
		t.Errorf("replies %v, want %v", statuses, wantStatus)
	}

	f.mu.Lock()
	f.log = nil
	f.mu.Unlock()
	sum, _ = f.run(t, bench.Batch{Size: 2, Continue: true})
	if got := sum.String(); got != "5 expected: 4 ok, 1 error, 0 no response" || strings.Count(batchLog(f.logged()), "call ") != 5 {
		t.Errorf("with Continue: %q, log\n%s", got, batchLog(f.logged()))
	}
}

// TestCallBatchesPercent: 40% of five machines is batches of two; a
// selection narrows what is batched.
func TestCallBatchesPercent(t *testing.T) {
	f := startBatchFleet(t)
	b, err := bench.ParseBatch("40%")
	if err != nil {
		t.Fatal(err)
	}
	sum, _ := f.run(t, b)
	if got := strings.Count(batchLog(f.logged()), " done: "); got != 3 || sum.NumOK != 5 {
		t.Errorf("%d batches, %s; want 3, 5 ok:\n%s", got, sum, batchLog(f.logged()))
	}
	// 10% of five is less than one machine: one a batch.
	b, _ = bench.ParseBatch("10%")
	f.mu.Lock()
	f.log = nil
	f.mu.Unlock()
	f.run(t, b)
	if strings.Count(batchLog(f.logged()), " done: ") != 5 {
		t.Errorf("10%% of 5: want 5 batches of one:\n%s", batchLog(f.logged()))
	}
}

// TestCallBatchesRefused: a call to sessions, or a bad batch, is refused
// before anything is called.
func TestCallBatchesRefused(t *testing.T) {
	f := startBatchFleet(t)
	c := f.connect(f.Admin)
	for _, tt := range []struct {
		opts bench.CallOptions
		b    bench.Batch
		want string
	}{
		{bench.CallOptions{Sessions: &fleet.SessionQuery{}}, bench.Batch{Size: 1}, "sessions cannot be made in batches"},
		{bench.CallOptions{}, bench.Batch{}, "want a percentage"},
		{bench.CallOptions{}, bench.Batch{Percent: math.NaN()}, "want a percentage"},
		{bench.CallOptions{}, bench.Batch{Percent: math.Inf(1)}, "want a percentage"},
		{bench.CallOptions{}, bench.Batch{Size: 1, Wait: -time.Second}, "batch wait -1s"},
	} {
		_, err := c.CallBatches(testCtx(t), "restart", nil, tt.opts, tt.b, func(bench.Reply) { t.Error("a reply") })
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: got %v, want %q", tt.b, err, tt.want)
		}
	}
	if got := f.logged(); len(got) != 0 {
		t.Errorf("called: %q", got)
	}
}

func TestParseBatch(t *testing.T) {
	for in, want := range map[string]bench.Batch{"5": {Size: 5}, "10%": {Percent: 10}, "100%": {Percent: 100}, "2.5%": {Percent: 2.5}} {
		got, err := bench.ParseBatch(in)
		if err != nil || got.Size != want.Size || got.Percent != want.Percent {
			t.Errorf("%q: got %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "0%", "101%", "x", "5x", "%", "1e3%", "NaN%", "Inf%", "-Inf%", "infinity%"} {
		if _, err := bench.ParseBatch(in); err == nil || !strings.Contains(err.Error(), "batch size") {
			t.Errorf("%q: got %v, want an error naming the batch size", in, err)
		}
	}
}
