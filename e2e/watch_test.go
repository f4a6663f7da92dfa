package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// These tests put a watcher (bench.Watch, as cc-bench watch runs it) in
// the situations where it used to go stale without a word — credentials
// that expire, a stalled process, a broker restart — with changes to the
// fleet it cannot hear of while it is out. Each ends when the watcher's
// view equals the control service's ONLINE list, and checks that the
// watcher said it resynchronised.

// watchThrough runs bench.Watch on its own operator connection to url (a
// stacktest.Proxy in front of the broker) and records what it reports.
func watchThrough(t *testing.T, url, seedFile string) (*eventLog, *bench.Client) {
	t.Helper()
	c, err := bench.Connect(url, bench.WithSeedFile(seedFile), bench.WithName("watcher (operator)"),
		bench.WithNATSOptions(nats.ReconnectWait(100*time.Millisecond), nats.MaxReconnects(-1)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &eventLog{}
	synced := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := c.Watch(ctx, func(ev fleet.PresenceEvent) {
			w.mu.Lock()
			w.evs = append(w.evs, ev)
			w.mu.Unlock()
			if ev.Event == bench.EventSynced {
				select {
				case synced <- struct{}{}:
				default:
				}
			}
		})
		if ctx.Err() == nil {
			t.Errorf("watch stopped: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done; c.Close() })
	select {
	case <-synced:
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not sync")
	}
	return w, c
}

// viewDiff compares the machines the watcher holds ONLINE with the
// control service's list; "" when they agree.
func viewDiff(w *eventLog, svc *controlsvc.Service) string {
	on := w.online()
	var missing, extra []string
	want := map[string]bool{}
	for _, s := range svc.Snapshot().Servers {
		want[s.Machine] = true
		if !on[s.Machine] {
			missing = append(missing, s.Machine)
		}
	}
	for id := range on {
		if !want[id] {
			extra = append(extra, id)
		}
	}
	if len(missing)+len(extra) == 0 {
		return ""
	}
	sort.Strings(extra)
	return fmt.Sprintf("missing=%v extra=%v", missing, extra)
}

// waitView waits until the watcher's view equals the service's list.
func waitView(t *testing.T, w *eventLog, svc *controlsvc.Service, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		diff := viewDiff(w, svc)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s the watcher's view differs from the control service's: %s\nevents:\n%s", d, diff, w.dump())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// resyncs returns the reasons of the resyncs the watcher reported.
func (l *eventLog) resyncs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.evs {
		if e.Event == bench.EventResync {
			out = append(out, e.Reason)
		}
	}
	return out
}

func (l *eventLog) dump() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, e := range l.evs {
		fmt.Fprintf(&b, "  %d %s %s %s\n", e.Seq, e.Event, e.Machine, e.Reason)
	}
	return b.String()
}

// requireResync checks the watcher reported a resync, and that machines
// it had to be told about by the resync are reported with FoundByResync.
func requireResync(t *testing.T, w *eventLog, left, joined []string) {
	t.Helper()
	if len(w.resyncs()) == 0 {
		t.Fatalf("the watcher never said it resynchronised:\n%s", w.dump())
	}
	t.Logf("resyncs: %q", w.resyncs())
	for _, id := range left {
		if w.count(fleet.EventLeft, id) != 1 {
			t.Errorf("%s: %d left events, want 1", id, w.count(fleet.EventLeft, id))
		}
	}
	for _, id := range joined {
		if w.count(fleet.EventJoined, id) != 1 {
			t.Errorf("%s: %d joined events, want 1", id, w.count(fleet.EventJoined, id))
		}
	}
}

// TestWatchResyncsAfterCredentialsExpire: issued credentials live 2 s, so
// the watcher's connection is cut and re-authorised every 2 s while
// machines come and go. Once, its reconnection is held (by a proxy) while
// a machine leaves and another joins — the window a re-authorisation
// always opens, made wide enough to be sure; then the fleet churns on
// through two more renewals. The watcher ends with the service's list.
func TestWatchResyncsAfterCredentialsExpire(t *testing.T) {
	svc := stacktest.StartControlWith(t, controlsvc.Config{DataDir: t.TempDir(), UserTTL: 2 * time.Second, Logger: stacktest.Logger(),
		ResyncInterval: 5 * time.Second, Broker: broker.Config{Listen: "127.0.0.1:0", PingInterval: time.Second, MaxPingsOut: 2}})
	stay := startAgent(t, svc, "10.0.0.1_stay", true)
	gone := startAgent(t, svc, "10.0.0.2_gone", true)
	stacktest.RegisterMachine(t, svc, "10.0.0.3_churn1", nil)
	stacktest.RegisterMachine(t, svc, "10.0.0.4_churn2", nil)
	stacktest.WaitOnline(t, svc, stay.MachineID(), gone.MachineID())
	proxy := stacktest.StartProxy(t, svc.ClientURL())
	w, c := watchThrough(t, proxy.URL(), newOperator(t, svc, "watcher", fleet.RoleViewer))

	proxy.HoldNew()
	stacktest.WaitFor(t, "the watcher's credentials to expire", 15*time.Second, func() bool { return !c.Conn().IsConnected() })
	// gone re-authorised too (or is about to): closed while connected, it
	// leaves at once rather than after the grace an expiry gets.
	stacktest.WaitFor(t, gone.MachineID()+" to re-authorise", 10*time.Second, func() bool { return gone.Conn().IsConnected() })
	gone.Close()
	churn1 := stacktest.NewAgent(t, svc, "10.0.0.3_churn1")
	stacktest.RunAgent(t, svc, churn1)
	stacktest.WaitFor(t, "the service to see "+gone.MachineID()+" leave", 20*time.Second, func() bool { return !stacktest.Online(svc, gone.MachineID()) })
	proxy.Resume()
	waitView(t, w, svc, 15*time.Second)
	requireResync(t, w, []string{gone.MachineID()}, []string{churn1.MachineID()})

	// Churn on through two more renewals of the watcher's credentials.
	renewed := c.Conn().Stats().Reconnects + 2
	deadline := time.Now().Add(20 * time.Second)
	for c.Conn().Stats().Reconnects < renewed {
		if time.Now().After(deadline) {
			t.Fatalf("the watcher's credentials were not renewed twice in 20 s (%d reconnects)", c.Conn().Stats().Reconnects)
		}
		a := stacktest.NewAgent(t, svc, "10.0.0.4_churn2")
		stacktest.RunAgent(t, svc, a)
		a.Close()
		stacktest.WaitOffline(t, svc, "10.0.0.4_churn2")
	}
	churn1.Close()
	stacktest.WaitFor(t, "churn1 to leave", 20*time.Second, func() bool { return !stacktest.Online(svc, churn1.MachineID()) })
	waitView(t, w, svc, 15*time.Second)
}

// TestWatchResyncsAfterStall: the watcher stops reading and answering (a
// paused proxy: what SIGSTOP does to the process) until the broker drops
// it for unanswered pings; two machines are killed meanwhile. Resumed, it
// says it resynchronised and shows both OFFLINE.
func TestWatchResyncsAfterStall(t *testing.T) {
	svc := startControl(t, "")
	stay := startAgent(t, svc, "10.0.0.1_stay", true)
	k1 := startAgent(t, svc, "10.0.0.2_killed", true)
	k2 := startAgent(t, svc, "10.0.0.3_killed", true)
	stacktest.WaitOnline(t, svc, stay.MachineID(), k1.MachineID(), k2.MachineID())
	proxy := stacktest.StartProxy(t, svc.ClientURL())
	w, _ := watchThrough(t, proxy.URL(), newOperator(t, svc, "watcher", fleet.RoleViewer))
	stacktest.WaitFor(t, "the service to see the watcher", 5*time.Second, func() bool { return svc.OperatorConnections("watcher") == 1 })

	proxy.Pause()
	stacktest.WaitFor(t, "the broker to drop the stalled watcher", 15*time.Second, func() bool { return svc.OperatorConnections("watcher") == 0 })
	k1.Close()
	k2.Close()
	stacktest.WaitOffline(t, svc, k1.MachineID(), k2.MachineID())
	proxy.Resume()

	waitView(t, w, svc, 15*time.Second)
	requireResync(t, w, []string{k1.MachineID(), k2.MachineID()}, nil)
	if !w.online()[stay.MachineID()] {
		t.Errorf("%s is ONLINE but not to the watcher", stay.MachineID())
	}
}

// TestWatchResyncsAfterBrokerRestart: the broker restarts on the same
// address; the watcher gets back in only after the fleet changed (one
// machine did not come back, a new one joined). It resynchronises and
// its view is the service's.
func TestWatchResyncsAfterBrokerRestart(t *testing.T) {
	data := t.TempDir()
	addr := freeAddr(t)
	b := brokerAt(t, data, addr)
	svc := startControlOn(t, data, b.ClientURL())
	stay := startAgent(t, svc, "10.0.0.1_stay", true)
	goner := startAgent(t, svc, "10.0.0.2_goner", true)
	stacktest.RegisterMachine(t, svc, "10.0.0.3_late", nil)
	stacktest.WaitOnline(t, svc, stay.MachineID(), goner.MachineID())
	proxy := stacktest.StartProxy(t, addr)
	w, c := watchThrough(t, proxy.URL(), newOperator(t, svc, "watcher", fleet.RoleViewer))

	proxy.HoldNew()
	b.Shutdown()
	goner.Close()
	stacktest.WaitFor(t, "the watcher to lose the broker", 5*time.Second, func() bool { return !c.Conn().IsConnected() })
	brokerAt(t, data, addr)
	stacktest.WaitFor(t, stay.MachineID()+" back ONLINE", 20*time.Second, func() bool { return stacktest.Online(svc, stay.MachineID()) })
	late := stacktest.NewAgent(t, svc, "10.0.0.3_late")
	stacktest.RunAgent(t, svc, late)
	proxy.Resume()

	waitView(t, w, svc, 15*time.Second)
	requireResync(t, w, nil, nil)
	on := w.online()
	if on[goner.MachineID()] || !on[late.MachineID()] || !on[stay.MachineID()] {
		t.Errorf("the watcher holds %v ONLINE; want %s and %s", on, stay.MachineID(), late.MachineID())
	}
}
