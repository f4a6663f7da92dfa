package main

import (
	"os"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/internal/cli/clitest"
)

func TestMain(m *testing.M) {
	clitest.MainIfAsked(main)
	os.Exit(m.Run())
}

// TestExitStatus: the real process exits 0 for --help of cc-bench and of
// every command and subcommand, and 2 for a usage error, before it
// connects to anything.
func TestExitStatus(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"help"}, {"help", "call"},
		{"servers", "--help"}, {"watch", "--help"}, {"history", "--help"}, {"call", "--help"},
		{"sessions", "--help"}, {"machines", "--help"}, {"machines", "ls", "--help"}, {"machines", "accept", "-h"},
		{"apps", "--help"}, {"apps", "add", "--help"}, {"operators", "--help"}, {"operators", "add", "--help"},
		{"registry", "--help"}, {"registry", "export", "--help"}, {"whoami", "--help"}, {"audit", "--help"},
	} {
		stdout, stderr, code := clitest.Run(t, args...)
		if code != 0 || !strings.Contains(stdout, "Usage") {
			t.Errorf("cc-bench %q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"no-such-command"},
		{"call", "current-load", "--machine", "bad id!"},
		{"--timeout", "-1s", "servers"},
		{"servers", "--timeout", "0s"},
		{"call", "current-load", "--timeout", "-1s"},
		{"servers", "--where", "bad"},
		{"call", "current-load", "--filter", "load1 >"},
	} {
		_, stderr, code := clitest.Run(t, append([]string{"--server", "nats://127.0.0.1:1"}, args...)...)
		if code != 2 || !strings.HasPrefix(stderr, "cc-bench: ") {
			t.Errorf("cc-bench %q: exit %d, stderr %q; want 2 and the reason", args, code, stderr)
		}
	}
}
