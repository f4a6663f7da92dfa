package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestMachineConnectionBurstIsBounded: one machine key opens 40
// connections at once (one opened 8,000 in 4.8 s). The callout counts the
// connections it authorised that have not shown up yet, so past the limit
// (2 here) the burst is refused and each refusal audited; the newest-wins
// rule closes what got in but one.
func TestMachineConnectionBurstIsBounded(t *testing.T) {
	svc := stacktest.StartControlWith(t, controlsvc.Config{
		DataDir:             t.TempDir(),
		Broker:              broker.Config{Listen: "127.0.0.1:0", PingInterval: time.Second, MaxPingsOut: 2},
		MaxAgentConnections: 2,
		Logger:              stacktest.Logger().With("side", "control"),
	})
	const id = "10.0.0.9_burst"
	stacktest.RegisterMachine(t, svc, id, nil)
	kp := stacktest.MachineKey(t, id)

	const burst = 40
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []*nats.Conn
		start = make(chan struct{})
	)
	for range burst {
		wg.Go(func() {
			<-start
			nc, err := connectAs(svc.ClientURL(), kp, id, nats.NoReconnect())
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	if len(conns) == 0 || len(conns) >= burst {
		t.Fatalf("%d of %d connections of one machine key were let in; want at least one and not all", len(conns), burst)
	}
	t.Logf("%d of %d let in", len(conns), burst)

	c, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stacktest.WaitFor(t, "the refusals in the audit", 10*time.Second, func() bool {
		recs, err := c.Audit(context.Background(), time.Time{}, 0)
		if err != nil {
			return false
		}
		for _, r := range recs {
			if r.Kind == fleet.AuditRefused && r.Name == id && strings.Contains(r.Reason, "the most one machine may hold (cc-control --max-agent-connections)") {
				return true
			}
		}
		return false
	})
	// Newest wins: what got in is closed down to one connection.
	stacktest.WaitFor(t, "one connection left", 10*time.Second, func() bool {
		open := 0
		mu.Lock()
		defer mu.Unlock()
		for _, nc := range conns {
			if !nc.IsClosed() {
				open++
			}
		}
		return open == 1
	})
}
