package bench_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

func TestServers(t *testing.T) {
	f := startFleet(t)
	f.Control.Join("10.0.0.2_web02", map[string]string{"role": "web"})
	f.Control.Join("10.0.0.1_web01", map[string]string{"role": "web"})
	f.Control.Join("10.0.0.3_db01", map[string]string{"role": "db"})
	c := f.connect(f.Viewer)
	sel, _ := bench.ParseSelector("role=web")
	got, err := c.Servers(testCtx(t), sel)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range got {
		ids = append(ids, s.Machine)
	}
	if want := []string{"10.0.0.1_web01", "10.0.0.2_web02"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("servers %q, want %q", ids, want)
	}
}

// TestWatchGapFree publishes one event while the snapshot is being taken
// (already in it: must not be repeated) and one after the snapshot was taken
// but before it was sent (not in it: must follow it).
func TestWatchGapFree(t *testing.T) {
	f := startFleet(t)
	f.Control.Join("10.0.0.1_a", nil)
	f.Control.Join("10.0.0.2_b", nil)
	f.Control.Leave("10.0.0.2_b", "client closed")
	once := func(fn func()) func() {
		done := false
		return func() {
			if !done {
				done = true
				fn()
			}
		}
	}
	f.Control.BeforeSnapshot = once(func() { f.Control.Join("10.0.0.3_early", nil) })
	f.Control.AfterSnapshot = once(func() { f.Control.Join("10.0.0.4_late", nil) })
	c := f.connect(f.Viewer)

	ctx, cancel := context.WithCancel(testCtx(t))
	var got []string
	err := c.Watch(ctx, func(ev fleet.PresenceEvent) {
		got = append(got, ev.Event+" "+ev.Machine)
		switch len(got) {
		case 4: // the snapshot is done; make a live change
			go f.Control.Leave("10.0.0.1_a", "stale connection")
		case 5:
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v, want context.Canceled", err)
	}
	want := []string{
		"present 10.0.0.1_a", "present 10.0.0.3_early", "synced ",
		"joined 10.0.0.4_late", "left 10.0.0.1_a",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("events:\n got %q\nwant %q", got, want)
	}
}

func TestWatchNoControlService(t *testing.T) {
	f := startFleet(t)
	f.Control.Close()
	c := f.connect(f.Admin)
	err := c.Watch(testCtx(t), func(fleet.PresenceEvent) {})
	if !errors.Is(err, bench.ErrNoService) {
		t.Errorf("err = %v, want ErrNoService", err)
	}
}

func TestWatchRespectsContext(t *testing.T) {
	f := startFleet(t)
	c := f.connect(f.Admin)
	ctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
	defer cancel()
	n := 0
	err := c.Watch(ctx, func(fleet.PresenceEvent) { n++ })
	if !errors.Is(err, context.DeadlineExceeded) || n != 1 {
		t.Errorf("err = %v after %d events; want DeadlineExceeded after the synced event", err, n)
	}
}

func TestWatchManyEventsInOrder(t *testing.T) {
	f := startFleet(t)
	c := f.connect(f.Admin)
	ctx, cancel := context.WithCancel(testCtx(t))
	const n = 200
	var got []string
	err := c.Watch(ctx, func(ev fleet.PresenceEvent) {
		if ev.Event == bench.EventSynced {
			go func() {
				for i := range n {
					f.Control.Join(fmt.Sprintf("10.0.0.%d_m", i), nil)
				}
			}()
			return
		}
		got = append(got, ev.Machine)
		if len(got) == n {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	for i, m := range got {
		if want := fmt.Sprintf("10.0.0.%d_m", i); m != want {
			t.Fatalf("event %d is %s, want %s", i, m, want)
		}
	}
}
