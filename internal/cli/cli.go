// Package cli holds what the daemons' mains share: running until a signal,
// reporting an error, reading defaults from the environment and comma
// lists from flags.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/commandcontrol/commandcontrol/internal/termsafe"
	"github.com/commandcontrol/commandcontrol/internal/version"
)

// Run is a program's body: args without the program name.
type Run func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// Main runs run with os.Args until SIGINT or SIGTERM cancels its context.
// An error is printed to stderr as "name: error" (terminal-safe; a help
// request, whose usage the flag set printed, is not) and the process
// exits with [ExitCode] of it: 0 for --help, 2 otherwise. When run returns
// version.ErrRequested (its flags were parsed with version.Parse and held
// --version), the version line is printed to stdout and the process exits 0.
func Main(name string, run Run) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, version.ErrRequested) {
		fmt.Fprintln(os.Stdout, version.Get().Line(name))
		return
	}
	if err != nil {
		Report(os.Stderr, name, err)
		os.Exit(ExitCode(err))
	}
}

// ExitCode is the exit status of a program whose body returned err: 0 for
// nil and for a help request (flag.ErrHelp: -h, --help), whose usage is
// the output asked for; 2 for any other error, a bad flag included.
func ExitCode(err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// Report writes err to w as "name: error", made safe for a terminal; it
// writes nothing for flag.ErrHelp (the usage is already out).
func Report(w io.Writer, name string, err error) {
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(w, name+":", termsafe.Text(err.Error()))
	}
}

// EnvOr returns the environment variable k, or def when it is unset or
// empty: the default of a flag that the environment may set.
func EnvOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// SplitList splits a comma-separated flag value, trimming space around
// each item and dropping empty ones.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// StartCPUProfile writes a CPU profile of the process to a new file at
// path until stop is called.
func StartCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile %s: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
