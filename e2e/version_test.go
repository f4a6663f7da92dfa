package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersionFlag builds every binary as the Makefile's build target
// does, with the version and commit given to the linker (as CI builds
// with -buildvcs=false), and runs each with --version: it prints
// "<binary> <version> commit <commit> <go>" on stdout and exits 0,
// without starting anything; --help lists the flag.
func TestVersionFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	const (
		ver    = "v9.8.7-e2e"
		commit = "0123456789abcdef0123456789abcdef01234567"
		pkg    = "github.com/commandcontrol/commandcontrol/internal/version"
	)
	bins := []string{"cc-control", "cc-agent", "cc-broker", "cc-bench", "cc-swarm", "cc-perf"}
	dir := t.TempDir()
	args := []string{"build", "-buildvcs=false", "-ldflags", "-X " + pkg + ".version=" + ver + " -X " + pkg + ".commit=" + commit,
		"-o", dir + string(os.PathSeparator)}
	for _, b := range bins {
		args = append(args, "./cmd/"+b)
	}
	build := exec.Command("go", args...)
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, b := range bins {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(filepath.Join(dir, b), "--version")
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		// No broker anywhere: --version must not need one.
		cmd.Env = append(os.Environ(), "CC_SERVER=nats://127.0.0.1:1")
		if err := cmd.Run(); err != nil {
			t.Errorf("%s --version: %v, stderr %q", b, err, stderr.String())
			continue
		}
		want := b + " " + ver + " commit " + commit + " go"
		if got := stdout.String(); !strings.HasPrefix(got, want) || strings.Count(got, "\n") != 1 || stderr.Len() != 0 {
			t.Errorf("%s --version: stdout %q, stderr %q; want one line starting %q", b, got, stderr.String(), want)
		}

		stdout.Reset()
		stderr.Reset()
		cmd = exec.Command(filepath.Join(dir, b), "--help")
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("%s --help: %v", b, err)
		}
		if help := stdout.String() + stderr.String(); !strings.Contains(help, "-version") || !strings.Contains(help, "print the version") {
			t.Errorf("%s --help does not list --version:\n%s", b, help)
		}
	}
}
