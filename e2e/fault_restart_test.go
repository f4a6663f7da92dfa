package e2e

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats-server/v2/server"
)

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// brokerAt starts a stand-alone broker on addr with the auth of the
// control service whose data directory is dataDir (as cc-broker does).
func brokerAt(t *testing.T, dataDir, addr string, mutate ...func(*broker.Config)) *broker.Broker {
	t.Helper()
	auth := stacktest.BrokerAuth(t, dataDir)
	cfg := broker.Config{Listen: addr, Auth: auth, PingInterval: time.Second, MaxPingsOut: 2, AuthTimeout: 2 * time.Second}
	for _, m := range mutate {
		m(&cfg)
	}
	return brokertest.StartWith(t, cfg)
}

// startWatch runs bench.Watch on its own operator connection and records
// what it reports (the current list first, then joined and left).
func startWatch(t *testing.T, url, seedFile string) *eventLog {
	t.Helper()
	c, err := bench.Connect(url, bench.WithSeedFile(seedFile))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &eventLog{}
	synced := make(chan struct{})
	var once sync.Once
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Watch(ctx, func(ev fleet.PresenceEvent) {
			w.mu.Lock()
			w.evs = append(w.evs, ev)
			w.mu.Unlock()
			if ev.Event == bench.EventSynced { // again after each resync
				once.Do(func() { close(synced) })
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done; c.Close() })
	select {
	case <-synced:
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not sync")
	}
	return w
}

// TestFaultBrokerRestart: the broker goes away and comes back on the same
// address; every agent reconnects by itself and is ONLINE again, once,
// and no `left` stands for a machine that is up.
func TestFaultBrokerRestart(t *testing.T) {
	data := t.TempDir()
	addr := freeAddr(t)
	b := brokerAt(t, data, addr)
	svc := startControlOn(t, data, b.ClientURL())
	const n = 20
	var ids []string
	for i := range n {
		a := startAgent(t, svc, "10.0.1."+itoa(i+1)+"_node", true, echoFn())
		ids = append(ids, a.MachineID())
	}
	stacktest.WaitFor(t, "agents online", 10*time.Second, func() bool { return len(svc.Snapshot().Servers) == n })

	b.Shutdown()
	stacktest.WaitFor(t, "presence emptied by the broker's shutdown", 5*time.Second, func() bool { return len(svc.Snapshot().Servers) == 0 })
	start := time.Now()
	b2 := brokerAt(t, data, addr)
	stacktest.WaitFor(t, "every agent ONLINE again", 15*time.Second, func() bool { return allOnlineOnce(svc, n) })
	t.Logf("broker restart: %d agents ONLINE again %s after the new broker started", n, time.Since(start))
	// A watcher that starts now sees every machine, and nothing else; the
	// control service's list agrees; every agent answers.
	w := startWatch(t, b2.ClientURL(), svc.AdminKeyPath())
	on := w.online()
	for _, id := range ids {
		if !on[id] {
			t.Errorf("%s is up but not ONLINE to a watcher", id)
		}
	}
	if len(on) != n {
		t.Errorf("watcher holds %d ONLINE, want %d", len(on), n)
	}
	op := operatorConn(t, b2.ClientURL(), svc.AdminKeyPath())
	var list fleet.MachineList
	ctl(t, op, fleet.OpMachinesList, nil, &list)
	for _, m := range list.Machines {
		if !m.Online {
			t.Errorf("machines.list: %s not online", m.ID)
		}
	}
	c := bench.NewClient(op, op.Opts.Nkey)
	res, err := c.Call(context.Background(), "echo", nil, bench.CallOptions{Timeout: 5 * time.Second})
	if err != nil || res.NumOK != n {
		t.Fatalf("call after the restart: %v, %d ok of %d", err, res.NumOK, n)
	}
	// Nothing flaps afterwards.
	time.Sleep(1500 * time.Millisecond)
	if got := w.total(fleet.EventLeft); got != 0 || len(w.online()) != n {
		t.Fatalf("presence changed after convergence: %+v", w.evs)
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

// TestFaultControlServiceRestart: while the control service is down a
// machine leaves and a new one tries to join. A watcher that stayed
// connected throughout sees, after the restart, the `left` of the first,
// the `joined` of the second (refused while down: fail closed), no second
// `joined` for the machines that stayed, and no ghost.
func TestFaultControlServiceRestart(t *testing.T) {
	data := t.TempDir()
	b := startExternal(t, data)
	svc := startControlOn(t, data, b.ClientURL())
	stay1 := startAgent(t, svc, "10.0.0.1_stay1", true, echoFn())
	goner := startAgent(t, svc, "10.0.0.2_goner", true, echoFn())
	stay2 := startAgent(t, svc, "10.0.0.3_stay2", true, echoFn())
	stacktest.WaitFor(t, "three online", 5*time.Second, func() bool { return len(svc.Snapshot().Servers) == 3 })
	w := startWatch(t, b.ClientURL(), svc.AdminKeyPath())
	op := operatorConn(t, b.ClientURL(), svc.AdminKeyPath())

	svc.Close()
	// Established connections still work.
	if _, err := stacktest.Request(op, stay1.MachineID(), "echo", []byte(`{"msg":"x"}`), 3*time.Second); err != nil {
		t.Fatalf("call while the control service is down: %v", err)
	}
	goner.Close()
	// A newcomer (already registered) is refused while the service is down.
	late := startAgentWith(t, svc, agent.Config{URL: b.ClientURL(), MachineID: "10.0.0.4_late"}, true, nil)
	stacktest.WaitFor(t, "the broker to close the newcomer's first attempt", 10*time.Second, func() bool {
		cz, err := b.Server().Connz(&server.ConnzOptions{State: server.ConnClosed, Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cz.Conns {
			if c.Name == late.MachineID() {
				return true
			}
		}
		return false
	})
	if late.Conn().IsConnected() {
		t.Fatal("a new agent got in while the control service was down")
	}

	start := time.Now()
	svc2 := startControlOn(t, data, b.ClientURL())
	stacktest.WaitFor(t, "left for the machine gone while down, joined for the newcomer", 10*time.Second, func() bool {
		return w.count(fleet.EventLeft, goner.MachineID()) == 1 && w.count(fleet.EventJoined, late.MachineID()) == 1
	})
	t.Logf("control service restart: watcher had left/joined %s after the restart", time.Since(start))
	snap := svc2.Snapshot()
	got := map[string]bool{}
	for _, s := range snap.Servers {
		got[s.Machine] = true
	}
	want := map[string]bool{stay1.MachineID(): true, stay2.MachineID(): true, late.MachineID(): true}
	if len(got) != len(want) || !got[stay1.MachineID()] || !got[stay2.MachineID()] || !got[late.MachineID()] {
		t.Fatalf("presence after restart: %v, want %v", got, want)
	}
	if on := w.online(); len(on) != 3 || on[goner.MachineID()] {
		t.Fatalf("the watcher holds %v ONLINE, want %v", on, want)
	}
	for _, id := range []string{stay1.MachineID(), stay2.MachineID()} {
		if n := w.count(fleet.EventJoined, id); n != 0 {
			t.Errorf("%s joined %d times for a watcher that had it ONLINE", id, n)
		}
	}
}
