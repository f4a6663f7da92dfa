package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestNodeWorkbench runs examples/node/workbench.js (the official nats npm
// client) against a running system: it must list the ONLINE servers, call
// current-load on the role=web selection only, and print the machines
// above the threshold. It needs `npm ci` in examples/node (CI does it);
// elsewhere it skips without it.
func TestNodeWorkbench(t *testing.T) {
	dir, _ := filepath.Abs("../examples/node")
	node, err := exec.LookPath("node")
	if _, serr := os.Stat(filepath.Join(dir, "node_modules", "nats")); err != nil || serr != nil {
		const msg = "node or examples/node/node_modules is missing: run (cd examples/node && npm ci)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	svc := startControl(t, "")
	labels := map[string]map[string]string{
		"10.0.0.5_web01": {"role": "web"},
		"10.0.0.6_web02": {"role": "web"},
		"10.0.0.7_db01":  {"role": "db"},
	}
	for id, l := range labels {
		a := startAgent(t, svc, id, false)
		if _, err := svc.Registry().AddMachine(id, a.PublicKey(), l, "test", false); err != nil {
			t.Fatal(err)
		}
		stacktest.WaitFor(t, id+" ONLINE", 10*time.Second, func() bool { return stacktest.Online(svc, id) })
	}
	seed := newOperator(t, svc, "node", "viewer")
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, append([]string{"workbench.js", "--server", svc.ClientURL(), "--key", seed}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("node workbench.js %v: %v\n%s", args, err, out)
		}
		return string(out)
	}

	out := run("--where", "role=web", "--fn", "current-load", "--field", "load1", "--threshold", "-1")
	for _, want := range []string{
		"online: 3 server(s)", "selected (role=web): ", "current-load: 2 ok, 0 failed; load1 > -1 on 2:",
		"ABOVE 10.0.0.5_web01 load1=", "ABOVE 10.0.0.6_web02 load1=",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ABOVE 10.0.0.7_db01") {
		t.Errorf("db01 is not role=web but was called:\n%s", out)
	}

	out = run("--threshold", "1e9")
	if !strings.Contains(out, "current-load: 3 ok, 0 failed; load1 > 1000000000 on 0:") || strings.Contains(out, "ABOVE") {
		t.Errorf("with an unreachable threshold nothing is above:\n%s", out)
	}
}
