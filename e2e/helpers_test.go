// Package e2e runs the whole stack in-process — embedded broker, control
// service with its auth callout, real agents and real operator connections
// — and checks what an operator would see.
package e2e

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("E2E_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startControl starts a control service with an embedded broker on a free
// loopback port and a fresh data directory.
func startControl(t *testing.T, dataDir string) *controlsvc.Service {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	return startControlWith(t, controlsvc.Config{
		DataDir:        dataDir,
		Broker:         broker.Config{Listen: "127.0.0.1:0", PingInterval: time.Second, MaxPingsOut: 2},
		ResyncInterval: 5 * time.Second,
		Logger:         testLogger(t).With("side", "control"),
	})
}

// startControlWith starts a control service configured by cfg, closed when
// the test ends.
func startControlWith(t *testing.T, cfg controlsvc.Config) *controlsvc.Service {
	t.Helper()
	svc, err := controlsvc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := svc.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); svc.Close() })
	return svc
}

// operatorConn connects as the operator whose seed is in path.
func operatorConn(t *testing.T, url, seedPath string, extra ...nats.Option) *nats.Conn {
	t.Helper()
	b, err := os.ReadFile(seedPath)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed(b[:len(b)-1])
	if err != nil {
		t.Fatal(err)
	}
	nc, err := connectAs(url, kp, "op-test", extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func connectAs(url string, kp nkeys.KeyPair, name string, extra ...nats.Option) (*nats.Conn, error) {
	pub, _ := kp.PublicKey()
	opts := append([]nats.Option{nats.Name(name), nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(fleet.ControlInbox(pub)), nats.Timeout(3 * time.Second)}, extra...)
	return nats.Connect(url, opts...)
}

// newOperator creates a key, registers it with role and returns its seed path.
func newOperator(t *testing.T, svc *controlsvc.Service, name, role string) string {
	t.Helper()
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	p := filepath.Join(t.TempDir(), name+".nk")
	if err := os.WriteFile(p, append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Registry().AddOperator(name, pub, role); err != nil {
		t.Fatal(err)
	}
	return p
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

// startAgentWith is [startAgentAt] with cfg's limits (URL and MachineID
// from cfg; a fresh key, the built-ins and extra, a test logger). svc is
// needed only to register the machine.
func startAgentWith(t *testing.T, svc *controlsvc.Service, cfg agent.Config, register bool, labels map[string]string, extra ...functions.Function) *agent.Agent {
	t.Helper()
	id := cfg.MachineID
	kp, _ := nkeys.CreateUser()
	set := functions.New(&functions.Env{MachineID: id, Root: "/"})
	for _, f := range extra {
		if err := set.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Key, cfg.Functions = kp, set
	if cfg.MaxReconnectDelay == 0 {
		cfg.MaxReconnectDelay = 300 * time.Millisecond
	}
	cfg.Logger = testLogger(t).With("side", "agent", "machine", id)
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if register {
		if _, err := svc.Registry().AddMachine(id, a.PublicKey(), labels, "test", false); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := a.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); a.Close() })
	return a
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", d, what)
}

func online(svc *controlsvc.Service, id string) bool {
	for _, s := range svc.Snapshot().Servers {
		if s.Machine == id {
			return true
		}
	}
	return false
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
