package e2e

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats-server/v2/server"
)

// TestClusterRegistryReplicatedAndRemovalKicks: on a JetStream cluster
// of three brokers the registry bucket is made with three replicas (and
// the log says so). A machine whose agent is connected to broker 3 and
// removed through the control API on broker 2, by the control service
// behind broker 1, is kicked off broker 3: the kick is the system
// account's request to the server holding the connection, routed across
// the cluster, so it does not matter which broker (or replica) handles
// the removal.
func TestClusterRegistryReplicatedAndRemovalKicks(t *testing.T) {
	dir := t.TempDir()
	// A JetStream cluster needs its routes configured on every broker,
	// the first too: each routes to all three fixed ports.
	ports := freePorts(t, 3)
	var routes []string
	for _, p := range ports {
		routes = append(routes, "nats-route://127.0.0.1:"+itoa(p))
	}
	bs := startClusterWith(t, dir, 3, func(i int, cfg *broker.Config) {
		cfg.StoreDir, cfg.ClusterListen, cfg.Routes = t.TempDir(), "127.0.0.1:"+itoa(ports[i]), routes
	})
	var logs stacktest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	svc := stacktest.StartControlWith(t, controlsvc.Config{DataDir: dir, BrokerURL: bs[0].ClientURL(),
		Audit: controlsvc.AuditConfig{NotDurable: true}, ResyncInterval: 5 * time.Second, Logger: log})
	if !bytes.Contains(logs.Bytes(), []byte("replicas=3")) {
		t.Fatalf("the registry bucket is not replicated three times on a cluster of three:\n%s", logs.Bytes())
	}
	const id = "10.1.0.3_node3"
	startAgentAt(t, svc, bs[2].ClientURL(), id, true, nil)
	stacktest.WaitFor(t, id+" ONLINE through broker 3", 10*time.Second, func() bool { return stacktest.Online(svc, id) })

	op := operatorConn(t, bs[1].ClientURL(), newOperator(t, svc, "ops", fleet.RoleAdmin))
	var r fleet.RemoveResult
	ctl(t, op, fleet.OpMachinesRemove, fleet.MachineRequest{ID: id}, &r)
	if r.Closed != 1 {
		t.Fatalf("machines rm closed %d connections, want the agent's 1 on broker 3", r.Closed)
	}
	stacktest.WaitFor(t, "the removed agent off broker 3", 10*time.Second, func() bool {
		cz, err := bs[2].Server().Connz(&server.ConnzOptions{Username: true, Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cz.Conns {
			if strings.HasSuffix(c.AuthorizedUser, id) {
				return false
			}
		}
		return true
	})
	if stacktest.Online(svc, id) {
		t.Error("the removed machine is still ONLINE")
	}
}
