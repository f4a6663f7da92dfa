package main

import (
	"os"
	"testing"

	"github.com/commandcontrol/commandcontrol/internal/cli/clitest"
)

func TestMain(m *testing.M) {
	clitest.MainIfAsked(main)
	os.Exit(m.Run())
}

// TestExitStatus: the real process exits 0 for --help and -h, printing its
// usage, and 2 for a flag it does not know, naming it.
func TestExitStatus(t *testing.T) { clitest.ExitStatus(t, "cc-agent") }
