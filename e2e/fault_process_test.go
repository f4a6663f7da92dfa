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

	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// buildAgent builds cmd/cc-agent into a temporary directory.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cc-agent")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/commandcontrol/commandcontrol/cmd/cc-agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go build cc-agent: %v\n%s", err, out)
	}
	return bin
}

// agentKeyFile writes a fresh machine key (mode 0600), registers it for
// id and returns the file.
func agentKeyFile(t *testing.T, svc *controlsvc.Service, id string) string {
	t.Helper()
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	p := filepath.Join(t.TempDir(), "agent.nk")
	if err := os.WriteFile(p, append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Registry().AddMachine(id, pub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	return p
}

// startAgentProcess runs the cc-agent binary (under prefix, e.g. ip netns
// exec NS) and kills it when the test ends.
func startAgentProcess(t *testing.T, bin, url, keyFile, id string, prefix ...string) *exec.Cmd {
	t.Helper()
	args := append(append([]string{}, prefix...), bin, "--server", url, "--key", keyFile, "--id", id)
	if len(prefix) > 0 {
		// From another network namespace the broker is across a veth
		// pair, not on loopback: a lab link, so plain text is allowed
		// explicitly.
		args = append(args, "--allow-plaintext")
	}
	cmd := exec.Command(args[0], args[1:]...)
	if stacktest.Logger().Enabled(context.Background(), 0) {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// leftAfter waits for machine id's left event and returns how long after
// start it came.
func leftAfter(t *testing.T, events *eventLog, id string, start time.Time, limit time.Duration) time.Duration {
	t.Helper()
	deadline := start.Add(limit)
	for time.Now().Before(deadline) {
		events.mu.Lock()
		for _, e := range events.evs {
			if e.Event == fleet.EventLeft && e.Machine == id {
				events.mu.Unlock()
				return time.Since(start)
			}
		}
		events.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no left for %s within %s", id, limit)
	return 0
}

// TestFaultAgentSIGKILL: a real cc-agent process killed with SIGKILL is
// `left` within a second (its socket closes with the process).
func TestFaultAgentSIGKILL(t *testing.T) {
	bin := buildAgent(t)
	svc := startControl(t, "")
	op := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	events := watchEvents(t, op)
	const id = "10.0.0.1_killed"
	cmd := startAgentProcess(t, bin, svc.ClientURL(), agentKeyFile(t, svc, id), id)
	stacktest.WaitFor(t, "agent process online", 10*time.Second, func() bool { return events.has(fleet.EventJoined, id) })
	waitAnswer(t, op, id, "current-load")
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := leftAfter(t, events, id, start, time.Second)
	t.Logf("SIGKILL → left after %s", took)
	if stacktest.Online(svc, id) {
		t.Fatal("killed agent still ONLINE")
	}
}

// waitAnswer retries a call until machine id answers it (its
// subscriptions may lag its joined event by a moment).
func waitAnswer(t *testing.T, op *nats.Conn, id, fn string) {
	t.Helper()
	var err error
	for range 20 {
		if _, err = stacktest.Request(op, id, fn, nil, 500*time.Millisecond); err == nil {
			return
		}
	}
	t.Fatalf("%s does not answer %s: %v", id, fn, err)
}

// runIP runs ip with args.
func runIP(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// netnsPair creates a network namespace joined to this one by a veth pair
// on a /30 of 10.231.0.0/16 that the test owns, and removes both at the
// end. It returns the namespace name, the address on this side, and the
// device inside the namespace.
func netnsPair(t *testing.T) (ns, hostAddr, nsDev string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2) to create a network namespace; install iproute2")
	}
	n := os.Getpid() % 16000
	third, fourth := n/64, (n%64)*4
	hostAddr = fmt.Sprintf("10.231.%d.%d", third, fourth+1)
	nsAddr := fmt.Sprintf("10.231.%d.%d", third, fourth+2)
	if out, _ := exec.Command("ip", "-o", "addr").CombinedOutput(); strings.Contains(string(out), hostAddr+"/") {
		t.Skipf("address %s is already in use here", hostAddr)
	}
	ns = fmt.Sprintf("cce2e%d", n)
	hostDev, nsDev := fmt.Sprintf("cch%d", n), fmt.Sprintf("ccn%d", n)
	runIP(t, "netns", "add", ns)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", ns).Run()
		_ = exec.Command("ip", "link", "del", hostDev).Run()
	})
	runIP(t, "link", "add", hostDev, "type", "veth", "peer", "name", nsDev)
	runIP(t, "link", "set", nsDev, "netns", ns)
	runIP(t, "addr", "add", hostAddr+"/30", "dev", hostDev)
	runIP(t, "link", "set", hostDev, "up")
	runIP(t, "-n", ns, "addr", "add", nsAddr+"/30", "dev", nsDev)
	runIP(t, "-n", ns, "link", "set", nsDev, "up")
	runIP(t, "-n", ns, "link", "set", "lo", "up")
	return ns, hostAddr, nsDev
}
