package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
)

// Helpers for tests with several brokers (cluster routes, leaf sites).

// controlBehind starts a control service on dataDir using the external
// broker at url.
func controlBehind(t *testing.T, dataDir, url string, resync time.Duration) *controlsvc.Service {
	t.Helper()
	return stacktest.StartControlWith(t, controlsvc.Config{DataDir: dataDir, BrokerURL: url, Audit: controlsvc.AuditConfig{NotDurable: true},
		ResyncInterval: resync, Logger: stacktest.Logger().With("side", "control")})
}

// controlBehindRetrying is controlBehind for brokers that may still be
// starting (real cc-broker processes): it retries until one connects. The
// caller closes it.
// With sites, it authorises those sites' leaf links.
func controlBehindRetrying(t *testing.T, ctx context.Context, dataDir, url string, sites []broker.LeafSite, opts ...nats.Option) *controlsvc.Service {
	t.Helper()
	var svc *controlsvc.Service
	stacktest.WaitFor(t, "the control service to connect through "+url, 15*time.Second, func() bool {
		s, err := controlsvc.New(controlsvc.Config{DataDir: dataDir, BrokerURL: url, NATSOptions: opts, Audit: controlsvc.AuditConfig{NotDurable: true},
			LeafSites: sites, Logger: stacktest.Logger()})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx); err != nil {
			return false
		}
		svc = s
		return true
	})
	return svc
}

// callLoad calls current-load on machine id and checks who answered.
func callLoad(t *testing.T, nc *nats.Conn, id, what string) {
	t.Helper()
	m, err := stacktest.Request(nc, id, "current-load", []byte("{}"), 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got := m.Header.Get(fleet.HeaderMachine); got != id || !strings.Contains(string(m.Data), "load1") {
		t.Fatalf("%s: reply from %q: %s", what, got, m.Data)
	}
}

// broadcastReaches broadcasts current-load from nc and waits for n
// distinct machines to answer.
func broadcastReaches(t *testing.T, nc *nats.Conn, n int, what string) {
	t.Helper()
	sub, err := stacktest.Broadcast(nc, "current-load", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	seen := map[string]bool{}
	for len(seen) < n {
		r, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("%s, replies %v: %v", what, seen, err)
		}
		seen[stacktest.Replier(r)] = true
	}
}

// buildCCBroker builds the real cc-broker binary and returns its path.
func buildCCBroker(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(os.PathSeparator), "./cmd/cc-broker")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(bin, "cc-broker")
}

// runCCBroker writes config to a file and runs cc-broker --config on it
// until the test ends; its output is logged if the test fails.
func runCCBroker(t *testing.T, ctx context.Context, bin, name, config string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, "--config", path)
	var out stacktest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
}

// readDeploy reads a file under deploy/.
func readDeploy(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
