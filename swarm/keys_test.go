package swarm_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/commandcontrol/commandcontrol/swarm"
)

// TestSwarmKeysFileSameMachines: a swarm made with a keys file registers
// its members; a second swarm given the same file is the same machines
// and is admitted without registering (cc-perf's admission-only run).
func TestSwarmKeysFileSameMachines(t *testing.T) {
	const n = 20
	svc := stacktest.StartControlWith(t, controlsvc.Config{DataDir: t.TempDir(), Broker: broker.Config{Listen: "127.0.0.1:0"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	keys := filepath.Join(t.TempDir(), "members.keys")
	first, err := swarm.New(swarm.Config{URL: svc.ClientURL(), N: n, Prefix: "k", KeysFile: keys})
	if err != nil {
		t.Fatal(err)
	}
	regs := first.Registrations()
	first.Close()
	if fi, err := os.Stat(keys); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keys file: %v %v, want mode 0600", fi, err)
	}
	if added, err := c.ImportMachines(ctx, regs); err != nil || added != n {
		t.Fatalf("import: %d, %v", added, err)
	}
	second, err := swarm.New(swarm.Config{URL: svc.ClientURL(), N: n, Prefix: "k", KeysFile: keys, MaxReconnectDelay: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	for i, r := range second.Registrations() {
		if r.Key != regs[i].Key {
			t.Fatalf("member %d: key %s, first swarm had %s", i, r.Key, regs[i].Key)
		}
	}
	if err := second.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for svc.OnlineCount() < n {
		if ctx.Err() != nil {
			t.Fatalf("only %d of %d ONLINE", svc.OnlineCount(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := swarm.New(swarm.Config{URL: svc.ClientURL(), N: n + 1, Prefix: "k", KeysFile: keys}); err == nil || !strings.Contains(err.Error(), "holds 20 member keys") {
		t.Fatalf("a keys file of another size: %v, want an error saying how many it holds", err)
	}
	if err := os.WriteFile(keys, []byte(strings.Repeat("SUnotaseed\n", n)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := swarm.New(swarm.Config{URL: svc.ClientURL(), N: n, Prefix: "k", KeysFile: keys}); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("a corrupt keys file: %v, want an error naming the line", err)
	}
}
