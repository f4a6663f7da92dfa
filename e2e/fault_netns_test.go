package e2e

import (
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestFaultHostSilentlyGone: an agent on a "host" (its own network
// namespace, reaching the broker over a veth pair) whose link is cut
// sends nothing more — no FIN, no RST. The broker's pings go unanswered
// and the machine is `left` within PingInterval × (MaxPingsOut+1).
func TestFaultHostSilentlyGone(t *testing.T) {
	ns, hostAddr, nsDev := netnsPair(t)
	bin := buildAgent(t)
	const ping, maxOut = time.Second, 2
	svc := stacktest.StartControlWith(t, controlsvc.Config{DataDir: t.TempDir(), Logger: stacktest.Logger(),
		Broker: broker.Config{Listen: hostAddr + ":0", PingInterval: ping, MaxPingsOut: maxOut}})
	op := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	events := watchEvents(t, op)
	const id = "10.231.0.2_silent"
	startAgentProcess(t, bin, svc.ClientURL(), agentKeyFile(t, svc, id), id, "ip", "netns", "exec", ns)
	stacktest.WaitFor(t, "agent in the namespace online", 15*time.Second, func() bool { return events.has(fleet.EventJoined, id) })
	waitAnswer(t, op, id, "current-load")

	start := time.Now()
	runIP(t, "-n", ns, "link", "set", nsDev, "down")
	bound := ping*(maxOut+1) + 1500*time.Millisecond
	took := leftAfter(t, events, id, start, bound)
	t.Logf("link cut → left after %s (bound %s)", took, bound)
	if took < ping {
		t.Fatalf("left after %s: sooner than one ping interval, so not by ping timeout", took)
	}
}
