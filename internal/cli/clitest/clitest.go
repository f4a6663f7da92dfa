// Package clitest runs a command's own test binary as the command, so a
// test can assert what the process really does: its exit status and its
// output.
package clitest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// envRunMain tells the test binary to run the command's main instead of
// its tests.
const envRunMain = "CC_CLITEST_RUN_MAIN"

// MainIfAsked runs main and exits 0 when the test binary was started by
// [Run]; otherwise it returns and the tests run. Call it first in
// TestMain.
func MainIfAsked(main func()) {
	if os.Getenv(envRunMain) == "1" {
		main()
		os.Exit(0)
	}
}

// Run starts this test binary as the command (its TestMain calls
// [MainIfAsked]) with args, and returns its stdout, stderr and exit
// status.
func Run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run %s %q: %v", os.Args[0], args, err)
	}
	return out.String(), errOut.String(), code
}

// ExitStatus asserts what every daemon's process does with its flags: it
// exits 0 for --help and -h, printing its usage, and 2 for a flag it does
// not know, naming it. name is the program's, for the messages.
func ExitStatus(t *testing.T, name string) {
	t.Helper()
	for _, arg := range []string{"--help", "-h"} {
		stdout, stderr, code := Run(t, arg)
		if code != 0 || !strings.Contains(stdout+stderr, "Usage") {
			t.Errorf("%s %s: exit %d, output %q", name, arg, code, stdout+stderr)
		}
	}
	_, stderr, code := Run(t, "--no-such-flag")
	if code != 2 || !strings.Contains(stderr, "no-such-flag") {
		t.Errorf("%s --no-such-flag: exit %d, stderr %q", name, code, stderr)
	}
}
