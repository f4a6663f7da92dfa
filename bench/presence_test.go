package bench_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

func TestServers(t *testing.T) {
	f := startFleet(t)
	f.agent("10.0.0.2_web02", map[string]string{"role": "web"})
	f.agent("10.0.0.1_web01", map[string]string{"role": "web"})
	f.agent("10.0.0.3_db01", map[string]string{"role": "db"})
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

// TestWatchGapFree makes one machine join after the watcher subscribed to
// events but before it asked for the snapshot (the event reaches it, and
// the machine is in the snapshot: it must not be repeated), and one join
// after the snapshot was answered but before the watcher read it (not in
// it: it must follow it).
func TestWatchGapFree(t *testing.T) {
	f := startFleet(t)
	a := stacktest.StartAgent(t, f.Svc, "10.0.0.1_a", nil)
	b := stacktest.StartAgent(t, f.Svc, "10.0.0.2_b", nil)
	b.Close()
	stacktest.WaitOffline(t, f.Svc, "10.0.0.2_b")
	launch := func(id string) func() {
		stacktest.RegisterMachine(t, f.Svc, id, nil)
		ag := stacktest.NewAgent(t, f.Svc, id)
		return func() {
			if err := stacktest.Launch(t.Context(), f.Svc, ag); err != nil {
				t.Error(err)
			}
		}
	}
	c := f.connect(f.Viewer, stacktest.WithHooks(
		stacktest.Hook{Sent: fleet.OpPresenceSnapshot, Fn: launch("10.0.0.3_early")}, // either snapshot subject
		stacktest.Hook{Received: `"servers":`, Fn: launch("10.0.0.4_late")},
	))

	ctx, cancel := context.WithCancel(testCtx(t))
	var got []string
	err := c.Watch(ctx, func(ev fleet.PresenceEvent) {
		got = append(got, ev.Event+" "+ev.Machine)
		switch len(got) {
		case 4: // the snapshot is done; make a live change
			go a.Close()
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

// TestWatchNoControlService: the control service stopped while the broker
// (a stand-alone one) runs on and the operator's connection stays up.
func TestWatchNoControlService(t *testing.T) {
	data := t.TempDir()
	b := stacktest.StartBroker(t, data)
	svc := stacktest.StartControl(t, stacktest.WithDataDir(data), stacktest.WithBroker(b.ClientURL()))
	c, err := bench.Connect(b.ClientURL(), bench.WithSeed(stacktest.AdminSeed(t, svc)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	svc.Close()
	err = c.Watch(testCtx(t), func(fleet.PresenceEvent) {})
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

// TestWatchManyEventsInOrder starts n agents at once after the watch is
// synced: the events arrive in the order the control service numbered
// them, none missing, until every machine has joined. (A machine may flap
// on a loaded test host; the watcher must still see every event.)
func TestWatchManyEventsInOrder(t *testing.T) {
	f := startFleet(t)
	const n = 100
	agents := make([]*agent.Agent, n)
	for i := range agents {
		id := fmt.Sprintf("10.0.0.%d_m", i)
		stacktest.RegisterMachine(t, f.Svc, id, nil)
		agents[i] = stacktest.NewAgent(t, f.Svc, id)
	}
	c := f.connect(f.Admin)
	ctx, cancel := context.WithCancel(testCtx(t))
	var got []fleet.PresenceEvent
	var synced uint64
	joined := map[string]bool{}
	var starting sync.WaitGroup
	err := c.Watch(ctx, func(ev fleet.PresenceEvent) {
		if ev.Event == bench.EventSynced {
			synced = ev.Seq
			for _, a := range agents {
				starting.Go(func() {
					if err := a.Start(t.Context()); err != nil {
						t.Error(err)
					}
				})
			}
			return
		}
		got = append(got, ev)
		if ev.Event == fleet.EventJoined {
			joined[ev.Machine] = true
		}
		if len(joined) == n {
			cancel()
		}
	})
	starting.Wait() // a machine joins before its Start has returned
	if !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	online := map[string]bool{}
	for i, ev := range got {
		if want := synced + 1 + uint64(i); ev.Seq != want {
			t.Fatalf("event %d (%s %s) has seq %d, want %d", i, ev.Event, ev.Machine, ev.Seq, want)
		}
		if (ev.Event == fleet.EventJoined) == online[ev.Machine] {
			t.Fatalf("event %d: %s %s, but it is online=%v", i, ev.Event, ev.Machine, online[ev.Machine])
		}
		online[ev.Machine] = ev.Event == fleet.EventJoined
	}
	if len(got) > n {
		t.Logf("%d events for %d joins: some machines flapped (reasons are in the left events)", len(got), n)
	}
}

// TestWatchResyncsAfterDroppingEvents: fn stalls while 30 machines join,
// and the watch's buffer holds fewer of their events than that, so some
// are dropped. The watch says so, resynchronises, and holds all 30.
func TestWatchResyncsAfterDroppingEvents(t *testing.T) {
	defer bench.SetWatchPendingBytes(2048)()
	f := startFleet(t)
	const n = 30
	agents := make([]*agent.Agent, n)
	for i := range agents {
		id := fmt.Sprintf("10.0.1.%d_m", i)
		stacktest.RegisterMachine(t, f.Svc, id, nil)
		agents[i] = stacktest.NewAgent(t, f.Svc, id)
	}
	c := f.connect(f.Viewer)
	ctx, cancel := context.WithCancel(testCtx(t))
	online := map[string]bool{}
	var resyncs []string
	started := false
	err := c.Watch(ctx, func(ev fleet.PresenceEvent) {
		switch ev.Event {
		case bench.EventPresent, fleet.EventJoined:
			online[ev.Machine] = true
		case fleet.EventLeft:
			delete(online, ev.Machine)
		case bench.EventResync:
			resyncs = append(resyncs, ev.Reason)
		case bench.EventSynced:
			if !started { // stall: every machine joins before fn returns
				started = true
				for _, a := range agents {
					stacktest.RunAgent(t, f.Svc, a)
				}
			} else if len(online) == n {
				cancel()
			}
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch returned %v after resyncs %q, holding %d online; want it to resync and hold %d", err, resyncs, len(online), n)
	}
	if len(resyncs) == 0 || !strings.HasPrefix(resyncs[0], "events dropped") {
		t.Errorf("resyncs %q, want one for dropped events", resyncs)
	}
}

// TestWatchResyncsOnSequenceGap: the control service restarts (numbering
// its events well above the old run's) while the watcher stays connected
// and a machine leaves; the watcher sees the jump and resynchronises.
func TestWatchResyncsOnSequenceGap(t *testing.T) {
	watchAcrossControlRestart(t, false, "resync sequence gap")
}

// TestWatchResyncsWhenNumberingRestarts: a control service restarted
// without its saved state (presence.json lost, a new host) numbers events
// from 1 again. A watcher that holds a higher number must not drop them
// as already seen: the events carry the new run's epoch, and the watcher
// resyncs and reports the machine that left meanwhile.
func TestWatchResyncsWhenNumberingRestarts(t *testing.T) {
	watchAcrossControlRestart(t, true, "resync the control service's event numbering changed")
}

// watchAcrossControlRestart watches two machines, restarts the control
// service (losing its saved presence state when loseState) while one of
// them leaves, and checks that the watcher resyncs with the reason that
// starts wantResync and reports the one that left.
func watchAcrossControlRestart(t *testing.T, loseState bool, wantResync string) {
	t.Helper()
	data := t.TempDir()
	b := stacktest.StartBroker(t, data)
	svc := stacktest.StartControl(t, stacktest.WithDataDir(data), stacktest.WithBroker(b.ClientURL()))
	stay := stacktest.StartAgent(t, svc, "10.0.0.1_stay", nil)
	gone := stacktest.StartAgent(t, svc, "10.0.0.2_gone", nil)
	c, err := bench.Connect(b.ClientURL(), bench.WithSeed(stacktest.AdminSeed(t, svc)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(testCtx(t))
	var got []string
	restarted := false
	err = c.Watch(ctx, func(ev fleet.PresenceEvent) {
		got = append(got, strings.Join(strings.Fields(ev.Event+" "+ev.Machine+" "+ev.Reason), " "))
		switch {
		case ev.Event == bench.EventSynced && !restarted:
			restarted = true
			svc.Close()
			gone.Close()
			if loseState {
				if err := os.Remove(filepath.Join(data, controlsvc.PresenceStateFile)); err != nil {
					t.Error(err)
				}
			}
			stacktest.StartControl(t, stacktest.WithDataDir(data), stacktest.WithBroker(b.ClientURL()))
		case ev.Event == bench.EventSynced:
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch returned %v", err)
	}
	want := []string{"present " + stay.MachineID(), "present " + gone.MachineID(), "synced",
		wantResync, "left " + gone.MachineID() + " " + bench.FoundByResync, "synced"}
	if len(got) != len(want) || !strings.HasPrefix(got[3], want[3]) {
		t.Fatalf("events:\n got %q\nwant %q", got, want)
	}
	got[3] = want[3]
	if !reflect.DeepEqual(got, want) {
		t.Errorf("events:\n got %q\nwant %q", got, want)
	}
}

// TestOnlineIDsAreTheSnapshots: the ids a call to every ONLINE machine
// asks for are the snapshot's machines, sorted.
func TestOnlineIDsAreTheSnapshots(t *testing.T) {
	f := startFleet(t)
	f.agent("10.0.0.2_web02", map[string]string{"role": "web"})
	f.agent("10.0.0.1_web01", nil)
	c := f.connect(f.Viewer)
	ids, err := c.OnlineIDs(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.1_web01", "10.0.0.2_web02"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("ids %q, want %q", ids, want)
	}
}

// TestSnapshotRequestBadBody: a snapshot request whose body is no
// fleet.SnapshotRequest is answered 400 naming what is wrong.
func TestSnapshotRequestBadBody(t *testing.T) {
	f := startFleet(t)
	c := f.connect(f.Viewer)
	inbox := fleet.ControlInbox(c.Key()) + ".bad"
	sub, err := c.Conn().SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{`{"ids":"yes"}`, `{"servers":true}`, `not json`} {
		if err := c.Conn().PublishRequest(fleet.CtlSubject(c.Key(), fleet.OpPresenceSnapshot), inbox, []byte(body)); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsgWithContext(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		fe := fleet.ErrorFromHeader(m.Header.Get(fleet.HeaderErrorCode), m.Header.Get(fleet.HeaderError))
		if fe == nil || fe.Code != fleet.CodeBadRequest || !strings.Contains(fe.Description, "presence snapshot request") {
			t.Errorf("body %s: answered %v (%s), want a 400 naming the request", body, fe, m.Data)
		}
	}
}
