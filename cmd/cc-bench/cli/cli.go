// Package cli is the cc-bench command line: one file per noun (servers,
// sessions, watch, call, machines, apps, operators), each a thin layer over the bench SDK.
// cmd/cc-bench only calls [Run].
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/commandcontrol/commandcontrol/internal/termsafe"
	"github.com/commandcontrol/commandcontrol/internal/version"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // an error, or a call where not every expected machine answered ok
	exitUsage   = 2 // the command line is wrong
)

// DefaultServer is the broker URL used without --server or CC_SERVER.
const DefaultServer = "nats://127.0.0.1:4222"

// now is the clock for uptimes; tests fix it.
var now = time.Now

// globals are the flags every command accepts, before or after its name.
type globals struct {
	server  string
	key     string
	json    bool
	timeout time.Duration
	// TLS to the broker: a CA to verify it, a client certificate, or
	// plain text to an address off this host, allowed explicitly.
	tlsCA, tlsCert, tlsKey string
	allowPlaintext         bool
}

// env is what a command runs with.
type env struct {
	ctx            context.Context
	stdout, stderr io.Writer
	g              globals
	getenv         func(string) string
}

// command is one cc-bench command.
type command struct {
	name    string
	summary string
	run     func(e *env, args []string) error
}

func commands() []command {
	return []command{
		{"servers", "list the ONLINE machines", runServers},
		{"watch", "show the ONLINE machines, then live joined / left events", runWatch},
		{"history", "show when machines joined and left, and why: what went down overnight", runHistory},
		{"call", "call a function on the selected machines (or sessions) and list the replies", runCall},
		{"report", "fleet reports: patches (pending security updates by package, CVE and machine)", runReport},
		{"sessions", "list the ONLINE sessions (browsers, apps, devices) by app and location", runSessions},
		{"machines", "manage the registry: ls, pending, accept, add, rm, label, reject, deny", runMachines},
		{"apps", "manage the apps whose sessions may join: ls, add, rm, token", runApps},
		{"operators", "manage the operators: ls, add, rm", runOperators},
		{"registry", "back up and restore the registry: export FILE, import FILE", runRegistry},
		{"whoami", "show which operator this key is, and its role", runWhoAmI},
		{"keygen", "make a new operator or agent nkey: seed to a file, public key printed", runKeygen},
		{"audit", "show the audit log: calls, registry changes, refused connections", runAudit},
		{"functions", "list the functions the selected machines serve, their arguments and role", runFunctions},
		{"version", "show the versions of cc-bench, the control service and the agents", runVersion},
	}
}

// Run runs cc-bench with args (without the program name) and returns the
// exit code: 0 success, 1 failure (including a call where not every expected
// machine answered ok), 2 a usage error.
func Run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, stdout, stderr, os.Getenv)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr, getenv: getenv}
	e.g = globals{server: getenv("CC_SERVER"), key: getenv("CC_KEY"), timeout: 5 * time.Second,
		tlsCA: getenv("CC_TLS_CA"), tlsCert: getenv("CC_TLS_CERT"), tlsKey: getenv("CC_TLS_KEY"), allowPlaintext: getenv("CC_ALLOW_PLAINTEXT") != ""}
	if e.g.server == "" {
		e.g.server = DefaultServer
	}
	fs := e.flagSet("cc-bench")
	showVersion := fs.Bool("version", false, version.FlagUsage)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, errHelp) {
			e.usage(stdout)
			return exitOK
		}
		return e.fail(usageErrorf("%v", err))
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.Get().Line("cc-bench"))
		return exitOK
	}
	rest := fs.Args()
	if len(rest) == 0 {
		e.usage(stderr)
		return exitUsage
	}
	name, rest := rest[0], rest[1:]
	if name == "help" {
		if len(rest) == 0 {
			e.usage(stdout)
			return exitOK
		}
		name, rest = rest[0], []string{"--help"}
	}
	for _, c := range commands() {
		if c.name == name {
			return e.fail(c.run(e, rest))
		}
	}
	return e.fail(usageErrorf("unknown command %q%s; run cc-bench --help for the list", name, suggest(name)))
}

func suggest(name string) string {
	for _, c := range commands() {
		if strings.HasPrefix(c.name, name) || strings.HasPrefix(name, c.name) {
			return fmt.Sprintf(" (did you mean %s?)", c.name)
		}
	}
	return ""
}

func (e *env) usage(w io.Writer) {
	fmt.Fprint(w, `cc-bench is the commandcontrol workbench: list and watch the ONLINE servers,
call client functions on a selection of them, and manage the registry.

Usage: cc-bench [global flags] COMMAND [args and flags]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Global flags (also accepted after the command):
`)
	printFlags(w, e.flagSet("cc-bench"), true)
	fmt.Fprintf(w, "  %-22s %s\n", "--version", version.FlagUsage+" (before COMMAND)")
	fmt.Fprint(w, `
Examples:
  cc-bench --key ./cc-data/admin.nk servers --where role=web
  cc-bench call current-load --where location=New-Jersey --filter 'load1 > 10'
  cc-bench call latencyCheck --sessions --where 'city=New Brunswick,region=New Jersey' --arg url=https://example.com/

Run cc-bench COMMAND --help for a command's flags.
`)
}

// exitError ends the program with code, after printing msg if not empty.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

// fail prints err and returns its exit code.
func (e *env) fail(err error) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, errHelp) {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			_, _ = io.WriteString(e.stderr, "cc-bench: "+termsafe.Text(ee.msg)+"\n")
		}
		return ee.code
	}
	// An error may span lines (a hint under it) and may quote what a
	// server or a client sent: its newlines stay, anything else a
	// terminal would act on is escaped.
	_, _ = io.WriteString(e.stderr, "cc-bench: "+termsafe.Text(explain(err))+"\n")
	return exitFailure
}
