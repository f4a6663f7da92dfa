package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// brokerProcess is a cc-broker child process in the cluster.
type brokerProcess struct {
	name, url string
	cmd       *exec.Cmd
}

func buildBroker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cc-broker")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/commandcontrol/commandcontrol/cmd/cc-broker").CombinedOutput(); err != nil {
		t.Fatalf("go build cc-broker: %v\n%s", err, out)
	}
	return bin
}

func startBrokerProcess(t *testing.T, bin, name, authFile, route string) *brokerProcess {
	t.Helper()
	listen := freeAddr(t)
	cmd := exec.Command(bin, "--auth", authFile, "--name", name, "--listen", listen, "--cluster-listen", freeAddr(t),
		"--routes", route, "--cluster-secret-file", writeClusterSecret(t), "--ping-interval", "1s", "--log-level", "warn")
	if stacktest.Logger().Enabled(context.Background(), 0) {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return &brokerProcess{name: name, url: "nats://" + listen, cmd: cmd}
}

// TestFaultClusterBrokerKilled: three brokers joined by routes, agents and
// operators spread over them. Calls and presence work across the cluster;
// when one broker is killed (SIGKILL, so it says nothing), its agents
// reconnect to the others and the fleet view converges: every agent
// ONLINE once, on a live broker, and callable.
func TestFaultClusterBrokerKilled(t *testing.T) {
	bin := buildBroker(t)
	data := t.TempDir()
	if _, err := controlsvc.LoadOrCreateKeys(data); err != nil {
		t.Fatal(err)
	}
	authFile := filepath.Join(data, controlsvc.BrokerAuthFile)
	b1 := brokerAt(t, data, "127.0.0.1:0", func(c *broker.Config) {
		c.Name, c.ClusterName, c.ClusterListen, c.ClusterSecret = "b1", "commandcontrol", "127.0.0.1:0", clusterSecret
	})
	b2 := startBrokerProcess(t, bin, "b2", authFile, b1.ClusterURL())
	b3 := startBrokerProcess(t, bin, "b3", authFile, b1.ClusterURL())
	stacktest.WaitFor(t, "a three-broker cluster", 15*time.Second, func() bool { return b1.Server().NumRemotes() == 2 })
	all := strings.Join([]string{b1.ClientURL(), b2.url, b3.url}, ",")

	svc := startControlOn(t, data, b1.ClientURL())
	const n = 12
	var ids []string
	var agents []*agent.Agent
	for i := range n {
		a := startAgentAt(t, svc, all, fmt.Sprintf("10.0.2.%d_node", i+1), true, nil, echoFn())
		ids = append(ids, a.MachineID())
		agents = append(agents, a)
	}
	stacktest.WaitFor(t, "agents online across the cluster", 15*time.Second, func() bool { return len(svc.Snapshot().Servers) == n })
	// Agents connect to a random broker of the three; kill the child
	// broker that holds the most of them.
	place := map[string][]string{}
	for _, a := range agents {
		place[a.Conn().ConnectedServerName()] = append(place[a.Conn().ConnectedServerName()], a.MachineID())
	}
	victim, survivor := b2, b3
	if len(place["b3"]) > len(place["b2"]) {
		victim, survivor = b3, b2
	}
	t.Logf("placement: b1 %d, b2 %d, b3 %d agents; killing %s", len(place["b1"]), len(place["b2"]), len(place["b3"]), victim.name)
	if len(place[victim.name]) == 0 {
		t.Fatalf("no agent on %s: placement %v", victim.name, place)
	}
	// Operators on two different nodes: one on b1, one on the survivor.
	opA, err := bench.Connect(b1.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer opA.Close()
	opB, err := bench.Connect(survivor.url, bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer opB.Close()
	ctx := context.Background()
	for _, op := range []*bench.Client{opA, opB} {
		res, err := op.Call(ctx, "echo", map[string]any{"msg": "across"}, bench.CallOptions{Timeout: 5 * time.Second})
		if err != nil || res.NumOK != n {
			t.Fatalf("call from %s: %v, %d of %d ok", op.Conn().ConnectedServerName(), err, res.NumOK, n)
		}
	}
	wB := startWatch(t, survivor.url, svc.AdminKeyPath())

	start := time.Now()
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitFor(t, "the fleet view to converge", 20*time.Second, func() bool {
		if !allOnlineOnce(svc, n) {
			return false
		}
		for _, a := range agents {
			if !a.Conn().IsConnected() || a.Conn().ConnectedServerName() == victim.name {
				return false
			}
		}
		return true
	})
	t.Logf("%s killed: %d agents moved, fleet view converged after %s", victim.name, len(place[victim.name]), time.Since(start))
	res, err := opA.Call(ctx, "echo", map[string]any{"msg": "after"}, bench.CallOptions{Timeout: 5 * time.Second})
	if err != nil || res.NumOK != n {
		t.Fatalf("call after the kill: %v, %d of %d ok (no response: %v)", err, res.NumOK, n, res.NoResponse)
	}
	// The watcher on a surviving node ends with every machine ONLINE.
	stacktest.WaitFor(t, "the watcher to hold every machine ONLINE", 5*time.Second, func() bool { return len(wB.online()) == n })
	for _, id := range ids {
		if !wB.online()[id] {
			t.Errorf("watcher: %s not ONLINE", id)
		}
	}
}
