package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// natsCLI finds the nats CLI (github.com/nats-io/natscli v0.5.0): on PATH or
// in $GOPATH/bin. In CI its absence fails the test; elsewhere it skips.
func natsCLI(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "nats")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	const msg = "the nats CLI is not installed: go install github.com/nats-io/natscli/nats@v0.5.0"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestNatsCLI drives the real nats CLI the way docs/DEPLOY.md shows: an
// operator's nkey and its inbox prefix, `nats req` on a function subject,
// the presence snapshot, and `nats micro ls/info/stats` listing the fleet.
func TestNatsCLI(t *testing.T) {
	bin := natsCLI(t)
	svc := startControl(t, "")
	for _, id := range []string{"10.0.0.5_web01", "10.0.0.6_web02"} {
		startAgent(t, svc, id, true)
		stacktest.WaitFor(t, id+" ONLINE", 5*time.Second, func() bool { return stacktest.Online(svc, id) })
	}
	seed := newOperator(t, svc, "cli", "admin")
	pub := stacktest.Pub(t, stacktest.LoadKey(t, seed))
	home := t.TempDir()
	natsIn := func(inbox string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		base := []string{"--server", svc.ClientURL(), "--nkey", seed, "--inbox-prefix", inbox, "--timeout", "5s"}
		cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
		// Keep the user's nats contexts out of it.
		cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "NATS_CONTEXT=")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	nats := func(args ...string) (string, error) { return natsIn(fleet.ControlInbox(pub), args...) }
	// A call to one machine: the inbox prefix names it, so the machine
	// may answer there (and only it may).
	web01 := fleet.DirectInbox(pub, "10.0.0.5_web01")
	// Discovery answers come under the operator's discovery inbox.
	discovery := fleet.DiscoveryInbox(pub)
	mustHave := func(out string, err error, want ...string) {
		t.Helper()
		if err != nil {
			t.Fatalf("nats: %v\n%s", err, out)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("nats output lacks %q:\n%s", w, out)
			}
		}
	}

	out, err := natsIn(web01, "req", "sys.commandControl.fn.10~0~0~5_web01.current-load."+pub, "{}")
	mustHave(out, err, `"load1"`, "Cc-Machine: 10.0.0.5_web01")

	out, err = natsIn(web01, "req", "sys.commandControl.fn.10~0~0~5_web01.nope."+pub, "{}")
	mustHave(out, err, "Nats-Service-Error-Code: 404")

	// With the plain operator inbox no agent may answer; the control
	// service says what the inbox must be.
	out, err = nats("req", "sys.commandControl.fn.10~0~0~5_web01.current-load."+pub, "{}")
	mustHave(out, err, "Nats-Service-Error-Code: 400", "--inbox-prefix "+fleet.OperatorInbox(pub))

	out, err = nats("req", fleet.PresenceSnapshotSubject, "")
	mustHave(out, err, "10.0.0.5_web01", "10.0.0.6_web02")

	out, err = natsIn(discovery, "micro", "ls")
	mustHave(out, err, fleet.AgentServiceName, fleet.ControlServiceName)

	// micro ls shows one row per instance: every agent is one.
	out, err = natsIn(discovery, "micro", "ls", "--json")
	mustHave(out, err, "10.0.0.5_web01", "10.0.0.6_web02")

	out, err = natsIn(discovery, "micro", "info", fleet.AgentServiceName)
	mustHave(out, err, "commandcontrol agent on 10.0.0.", "sys.commandControl.all.*.*")

	out, err = natsIn(discovery, "micro", "stats", fleet.AgentServiceName, "--json")
	mustHave(out, err, `"num_requests"`)

	// Without the inbox prefix the broker refuses the reply subscription:
	// one operator can never read another's replies.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--server", svc.ClientURL(), "--nkey", seed, "--timeout", "2s",
		"req", "sys.commandControl.fn.10~0~0~5_web01.current-load."+pub, "{}")
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "NATS_CONTEXT=")
	b, _ := cmd.CombinedOutput()
	if !strings.Contains(string(b), "Permissions Violation") || strings.Contains(string(b), "load1") {
		t.Errorf("nats req without --inbox-prefix: want a permissions violation and no reply:\n%s", b)
	}
}
