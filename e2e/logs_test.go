package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// seedRE matches an nkey seed: "S", the key type (U user, A account, X
// curve, O operator, N server, C cluster), then 56 base32 characters. A
// public key (56 characters, starting U/A/X/…) cannot contain one.
var seedRE = regexp.MustCompile(`S[UAXONC][A-Z2-7]{56}`)

// TestNoSecretInLogs runs the real binaries — cc-control (embedded broker,
// local agent, metrics), a cc-agent that is refused then accepted, and
// cc-bench calls — at debug level in JSON and in text, and greps
// everything they print for an nkey seed. It also checks that
// --log-format json prints one JSON object per log line.
func TestNoSecretInLogs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(os.PathSeparator), "./cmd/cc-control", "./cmd/cc-agent", "./cmd/cc-bench")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			control, agentLog, benchOut := fullRun(t, bin, format)
			all := control + agentLog + benchOut
			if s := seedRE.FindString(all); s != "" {
				t.Fatalf("a seed (%.4s…) was printed; output:\n%s", s, all)
			}
			if format == "json" {
				for _, l := range strings.Split(control+agentLog, "\n") {
					if strings.HasPrefix(l, "{") && !json.Valid([]byte(l)) {
						t.Errorf("not a JSON log line: %s", l)
					}
				}
				if !strings.Contains(control, `"msg":"control service ready"`) {
					t.Errorf("no JSON log lines from cc-control:\n%s", control)
				}
			}
		})
	}
}

// fullRun starts cc-control and a cc-agent, accepts the agent with
// cc-bench and calls it, and returns what each printed.
func fullRun(t *testing.T, bin, format string) (control, agentLog, benchOut string) {
	data := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var cOut stacktest.Buffer
	cc := exec.CommandContext(ctx, filepath.Join(bin, "cc-control"), "--data", data, "--listen", "127.0.0.1:0",
		"--metrics-listen", "127.0.0.1:0", "--local-agent", "--local-agent-id", "10.9.9.1_local",
		"--log-format", format, "--log-level", "debug")
	cc.Stdout, cc.Stderr = &cOut, &cOut
	if err := cc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cc.Process.Kill(); _ = cc.Wait() }()
	var url string
	stacktest.WaitFor(t, "cc-control to print its broker URL", 15*time.Second, func() bool {
		m := regexp.MustCompile(`broker:\s+(nats://127\.0\.0\.1:\d+)`).FindStringSubmatch(cOut.String())
		if m != nil {
			url = m[1]
		}
		return url != ""
	})
	admin := filepath.Join(data, "admin.nk")
	if b, err := os.ReadFile(admin); err != nil || !seedRE.Match(b) {
		t.Fatalf("admin key %s: %v (the pattern must match a real seed)", admin, err)
	}

	var aOut stacktest.Buffer
	ag := exec.CommandContext(ctx, filepath.Join(bin, "cc-agent"), "--server", url, "--key", filepath.Join(t.TempDir(), "agent.nk"),
		"--id", "10.9.9.2_remote", "--log-format", format, "--log-level", "debug")
	ag.Stdout, ag.Stderr = &aOut, &aOut
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ag.Process.Kill(); _ = ag.Wait() }()

	var bOut bytes.Buffer
	bench := func(args ...string) error {
		c := exec.CommandContext(ctx, filepath.Join(bin, "cc-bench"), append([]string{"--server", url, "--key", admin}, args...)...)
		c.Stdout, c.Stderr = &bOut, &bOut
		return c.Run()
	}
	stacktest.WaitFor(t, "the agent to be pending", 15*time.Second, func() bool {
		_ = bench("machines", "pending")
		return strings.Contains(bOut.String(), "10.9.9.2_remote")
	})
	if err := bench("machines", "accept", "10.9.9.2_remote"); err != nil {
		t.Fatalf("accept: %v\n%s", err, bOut.String())
	}
	stacktest.WaitFor(t, "two machines answering", 15*time.Second, func() bool {
		before := bOut.Len()
		err := bench("call", "current-load", "--json")
		return err == nil && strings.Count(bOut.String()[before:], `"status":"ok"`) == 2
	})
	_ = bench("whoami")
	_ = bench("operators", "ls")
	_ = bench("call", "nope")
	return cOut.String(), aOut.String(), bOut.String()
}
