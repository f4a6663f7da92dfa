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

// TestExitStatus: the real process exits 0 for --help and -h, printing its
// usage, and 2 for a flag it does not know, naming it.
func TestExitStatus(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		stdout, stderr, code := clitest.Run(t, arg)
		if code != 0 || !strings.Contains(stdout+stderr, "Usage") {
			t.Errorf("cc-swarm %s: exit %d, output %q", arg, code, stdout+stderr)
		}
	}
	_, stderr, code := clitest.Run(t, "--no-such-flag")
	if code != 2 || !strings.Contains(stderr, "no-such-flag") {
		t.Errorf("cc-swarm --no-such-flag: exit %d, stderr %q", code, stderr)
	}
}
