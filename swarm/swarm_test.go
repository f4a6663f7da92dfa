package swarm_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/commandcontrol/commandcontrol/swarm"
)

// TestSwarmSmoke is the CI-sized swarm: 200 simulated agents registered in
// bulk, authorised through the real callout, all ONLINE, and a fleet call
// answered by every one of them with its synthetic load. It asserts
// correctness only; speed is the benchmarks' business.
func TestSwarmSmoke(t *testing.T) {
	const n = 200
	svc := stacktest.StartControlWith(t, controlsvc.Config{DataDir: t.TempDir(), Broker: broker.Config{Listen: "127.0.0.1:0"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	sw, err := swarm.New(swarm.Config{URL: svc.ClientURL(), N: n, Prefix: "smoke", MaxReconnectDelay: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	added, err := c.ImportMachines(ctx, sw.Registrations())
	if err != nil || added != n {
		t.Fatalf("import: %d, %v", added, err)
	}
	if err := sw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for len(svc.Snapshot().Servers) < n {
		if ctx.Err() != nil {
			t.Fatalf("only %d of %d ONLINE", len(svc.Snapshot().Servers), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	res, err := c.Call(ctx, "current-load", nil, bench.CallOptions{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Expected != n || res.NumOK != n || len(res.NoResponse) != 0 || res.NumUnexpected != 0 {
		t.Fatalf("call: %s", res.Summary.String())
	}
	f, _ := bench.ParseFilter("load1 > 10")
	hot := 0
	for _, r := range res.Replied {
		if f.Match(r.Result) {
			hot++
		}
		if !strings.Contains(r.Machine, "_smoke") {
			t.Fatalf("unexpected machine %q", r.Machine)
		}
	}
	// Profiles 6 and 7 of every 8 have load1 above 10.
	if want := n / swarm.NumProfiles * 2; hot != want {
		t.Fatalf("load1 > 10 matched %d machines, want %d", hot, want)
	}
	sel, _ := bench.ParseSelector("profile=7")
	servers, err := c.Servers(ctx, sel)
	if err != nil || len(servers) != n/swarm.NumProfiles {
		t.Fatalf("selection profile=7: %d servers, %v", len(servers), err)
	}
}
