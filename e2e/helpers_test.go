// Package e2e runs the whole stack in-process — embedded broker, control
// service with its auth callout, real agents and real operator connections
// — and checks what an operator would see.
package e2e

import (
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// startControl starts a control service with an embedded broker on a free
// loopback port and a fresh data directory (or dataDir), with e2e's timing:
// the broker pings every second and drops a client after two unanswered
// pings, and the service resyncs presence every 5s, so losses show fast.
func startControl(t *testing.T, dataDir string) *controlsvc.Service {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	return stacktest.StartControlWith(t, controlsvc.Config{
		DataDir:        dataDir,
		Broker:         broker.Config{Listen: "127.0.0.1:0", PingInterval: time.Second, MaxPingsOut: 2},
		ResyncInterval: 5 * time.Second,
		Logger:         stacktest.Logger().With("side", "control"),
	})
}

// operatorConn connects as the operator whose seed is in path (see
// [connectAs]), closed when the test ends.
func operatorConn(t *testing.T, url, seedPath string, extra ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := connectAs(url, stacktest.LoadKey(t, seedPath), "op-test", extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// connectAs is [stacktest.Dial] as an operator's tools connect: they
// reconnect (across a broker restart) and give up connecting after 3s.
func connectAs(url string, kp nkeys.KeyPair, name string, extra ...nats.Option) (*nats.Conn, error) {
	return stacktest.Dial(url, kp, name, append([]nats.Option{stacktest.Reconnecting, nats.Timeout(3 * time.Second)}, extra...)...)
}

// newOperator registers operator name with role and a fresh random key,
// and returns the path of its seed file.
func newOperator(t *testing.T, svc *controlsvc.Service, name, role string) string {
	t.Helper()
	return stacktest.WriteSeed(t, name, stacktest.AddOperator(t, svc, name, role, stacktest.NewKey(t)))
}

// startAgent starts a real agent for machine id with a fresh key on the
// control service's embedded broker; when register is set the key is added
// to the registry first (labelled role=test).
func startAgent(t *testing.T, svc *controlsvc.Service, id string, register bool, extra ...functions.Function) *agent.Agent {
	t.Helper()
	var labels map[string]string
	if register {
		labels = map[string]string{"role": "test"}
	}
	return startAgentAt(t, svc, svc.ClientURL(), id, register, labels, extra...)
}

// startAgentAt starts a real agent for machine id with a fresh key,
// connecting to url (one broker or several, comma-separated), serving the
// built-in functions and extra; when register is set the key is added to
// svc's registry with labels first. It is closed when the test ends.
func startAgentAt(t *testing.T, svc *controlsvc.Service, url, id string, register bool, labels map[string]string, extra ...functions.Function) *agent.Agent {
	t.Helper()
	return startAgentWith(t, svc, agent.Config{URL: url, MachineID: id}, register, labels, extra...)
}

// startAgentWith is [startAgentAt] with cfg's limits (see
// [stacktest.NewAgentWith]) and a fresh random key. It does not wait for
// the machine to be ONLINE: an unregistered one is refused.
func startAgentWith(t *testing.T, svc *controlsvc.Service, cfg agent.Config, register bool, labels map[string]string, extra ...functions.Function) *agent.Agent {
	t.Helper()
	cfg.Key = stacktest.NewKey(t)
	a := stacktest.NewAgentWith(t, cfg, extra...)
	if register {
		stacktest.RegisterKey(t, svc, cfg.MachineID, a.PublicKey(), labels)
	}
	stacktest.Spawn(t, a)
	return a
}

// allOnlineOnce reports whether the control service holds exactly n
// machines ONLINE, each on one connection (no duplicate session left over
// from a reconnect).
func allOnlineOnce(svc *controlsvc.Service, n int) bool {
	s := svc.Snapshot()
	if len(s.Servers) != n {
		return false
	}
	for _, srv := range s.Servers {
		if srv.Connections != 1 {
			return false
		}
	}
	return true
}
