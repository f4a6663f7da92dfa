package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestFleetCallThroughWorkbench: a call on all three machines with the
// real built-in current-load returns three results and ends the moment the
// third arrives, long before its deadline; a filter keeps the matching ones.
func TestFleetCallThroughWorkbench(t *testing.T) {
	svc := startControl(t, "")
	ids := []string{"10.0.0.1_web01", "10.0.0.2_web02", "10.0.0.3_db01"}
	for _, id := range ids {
		startAgent(t, svc, id, true)
	}
	stacktest.WaitFor(t, "three agents online", 5*time.Second, func() bool { return len(svc.Snapshot().Servers) == 3 })
	c, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	const deadline = 30 * time.Second
	res, err := c.Call(ctx, "current-load", nil, bench.CallOptions{Timeout: deadline})
	if err != nil {
		t.Fatal(err)
	}
	if res.Expected != 3 || res.NumOK != 3 || len(res.NoResponse) != 0 || res.TimedOut {
		t.Fatalf("summary: got %s (timed out %v), want 3 ok", res.Summary.String(), res.TimedOut)
	}
	// Generous bound: the point is that the call did not wait for its deadline.
	if res.Took > deadline/3 {
		t.Fatalf("call took %s: it waited for the deadline instead of ending at the last reply", res.Took)
	}
	got := map[string]bool{}
	for _, r := range res.Replied {
		got[r.Machine] = true
		if !strings.Contains(string(r.Result), `"load1"`) {
			t.Errorf("%s: result %s has no load1", r.Machine, r.Result)
		}
	}
	for _, id := range ids {
		if !got[id] {
			t.Errorf("no reply from %s", id)
		}
	}

	f, err := bench.ParseFilter("load1 >= 0 and cpus > 0")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range res.Replied {
		if f.Match(r.Result) {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("filter matched %d machines, want 3", n)
	}
	never, _ := bench.ParseFilter("load1 > 1000000")
	for _, r := range res.Replied {
		if never.Match(r.Result) {
			t.Fatalf("%s matched load1 > 1000000", r.Machine)
		}
	}

	// A selection calls only the selected machine.
	sel, _ := bench.ParseSelector("machine=10.0.0.3_db01")
	res, err = c.Call(ctx, "machine-info", nil, bench.CallOptions{Where: sel, Timeout: deadline})
	if err != nil {
		t.Fatal(err)
	}
	if res.Expected != 1 || res.NumOK != 1 || res.Replied[0].Machine != "10.0.0.3_db01" || res.NumUnexpected != 0 {
		t.Fatalf("selection: got %s, replies %+v", res.Summary.String(), res.Replied)
	}
}

// TestLateWatcherSeesCurrentListFirst: a workbench that starts watching
// after the fleet is up gets the current list first, then live changes.
func TestLateWatcherSeesCurrentListFirst(t *testing.T) {
	svc := startControl(t, "")
	a1 := startAgent(t, svc, "10.0.0.1_web01", true)
	startAgent(t, svc, "10.0.0.2_web02", true)
	stacktest.WaitFor(t, "agents online", 5*time.Second, func() bool { return len(svc.Snapshot().Servers) == 2 })
	c, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var mu sync.Mutex
	var seen []string
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- c.Watch(ctx, func(ev fleet.PresenceEvent) {
			mu.Lock()
			seen = append(seen, ev.Event+" "+ev.Machine)
			mu.Unlock()
		})
	}()
	snapshotOf := func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), seen...) }
	stacktest.WaitFor(t, "snapshot delivered", 5*time.Second, func() bool { return len(snapshotOf()) >= 3 })
	a3 := startAgent(t, svc, "10.0.0.3_db01", true)
	a1.Close()
	stacktest.WaitFor(t, "live events", 5*time.Second, func() bool { return len(snapshotOf()) >= 5 })
	got := snapshotOf()
	want := []string{"present 10.0.0.1_web01", "present 10.0.0.2_web02", bench.EventSynced + " "}
	for i, w := range want {
		if got[i] != w {
			t.Fatalf("event %d: got %q, want %q (all: %q)", i, got[i], w, got)
		}
	}
	live := strings.Join(got[3:], ",")
	if !strings.Contains(live, "joined "+a3.MachineID()) || !strings.Contains(live, "left "+a1.MachineID()) {
		t.Fatalf("live events: got %q", got[3:])
	}
	cancel()
	<-done
}
