package e2e

import (
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestSessionsOnSecondBroker: in a cluster, sessions connect over the
// WebSocket listener of a broker that is not the control service's. The
// callout behind the first broker admits them across the route with
// their location, the workbench on the first broker lists and calls them
// by location, and a session that closes there is seen leaving.
func TestSessionsOnSecondBroker(t *testing.T) {
	dir := t.TempDir()
	bs := startClusterWith(t, dir, 2, func(i int, c *broker.Config) {
		if i == 1 {
			c.WebSocketListen = "127.0.0.1:0"
		}
	})
	svc := stacktest.StartControlWith(t, controlsvc.Config{DataDir: dir, BrokerURL: bs[0].ClientURL(),
		Audit: controlsvc.AuditConfig{NotDurable: true}, ResyncInterval: 5 * time.Second, Locate: sitesLocate,
		Logger: stacktest.Logger().With("side", "control")})
	c, err := bench.Connect(bs[0].ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx := ctxFor(t)
	if _, err := c.AppsAdd(ctx, fleet.AppRequest{Name: "demo", Functions: []string{"latencyCheck"}, Public: true}); err != nil {
		t.Fatal(err)
	}

	wsURL := bs[1].WebSocketURL()
	nb := mustJoin(t, wsURL, "demo", "", nbAddr, "latencyCheck", latency)
	nwk := mustJoin(t, wsURL, "demo", "", newarkAddr, "latencyCheck", latency)
	if ci := connInfo(t, bs[1].Server(), "session e2e"); ci.Type != "websocket" {
		t.Errorf("session connection on broker 2 has type %q, want websocket", ci.Type)
	}
	awaitSessions(t, c, fleet.SessionQuery{}, nb.id, nwk.id)

	where := fleet.SessionQuery{Where: map[string]string{"city": "New Brunswick"}}
	ss := awaitSessions(t, c, where, nb.id)
	if ss[0].IP != nbAddr || ss[0].Location == nil || ss[0].Location.City != "New Brunswick" {
		t.Errorf("session on broker 2 listed as %+v; want %s in New Brunswick", ss[0], nbAddr)
	}
	res, err := c.Call(ctx, "latencyCheck", map[string]any{"url": "https://example.test/"}, bench.CallOptions{Sessions: &where, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Expected != 1 || !res.AllOK() || len(res.Replied) != 1 || res.Replied[0].Session != nb.id {
		t.Errorf("call across the route: %+v; want the New Brunswick session's answer", res.Summary)
	}

	nb.nc.Close()
	awaitSessions(t, c, fleet.SessionQuery{}, nwk.id)
}
