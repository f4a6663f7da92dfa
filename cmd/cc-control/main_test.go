package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestQuickStart runs the whole program as the README's quick start does,
// on a free port with a fresh data directory, and queries it as an
// operator would.
func TestQuickStart(t *testing.T) {
	data := t.TempDir()
	p := startProgram(t, "--data", data, "--listen", "127.0.0.1:0", "--local-agent", "--local-agent-id", "127.0.0.1_quickstart")
	out := p.stdout.String()
	url := regexp.MustCompile(`broker:\s+(nats://\S+)`).FindStringSubmatch(out)
	if url == nil {
		t.Fatalf("no broker URL in:\n%s", out)
	}
	adminKey := filepath.Join(data, "admin.nk")
	for _, want := range []string{"admin key: " + adminKey + " (created now", "127.0.0.1_quickstart (this machine, accepted)", "--key " + adminKey + " --server " + url[1] + " call current-load"} {
		if !strings.Contains(out, want) {
			t.Errorf("welcome lacks %q:\n%s", want, out)
		}
	}
	c, err := bench.Connect(url[1], bench.WithSeedFile(adminKey))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitServers(t, c, "127.0.0.1_quickstart")
	res, err := c.Call(context.Background(), "current-load", nil, bench.CallOptions{Timeout: 10 * time.Second})
	if err != nil || !res.AllOK() {
		t.Fatalf("call: %v %+v", err, res)
	}
	p.stop(t)
}

// program is cc-control's run started in the test, as from the shell.
type program struct {
	stdout, stderr stacktest.Buffer
	cancel         context.CancelFunc
	done           chan error
}

// startProgram runs cc-control with args and waits for its welcome
// (failing the test if it stops first or takes over 10 s).
func startProgram(t *testing.T, args ...string) *program {
	t.Helper()
	p := &program{done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	t.Cleanup(cancel)
	go func() { p.done <- run(ctx, args, &p.stdout, &p.stderr) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stdout.String(), "Query the fleet") {
		select {
		case err := <-p.done:
			t.Fatalf("cc-control stopped: %v\n%s", err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no welcome after 10s; stdout:\n%s\nstderr:\n%s", p.stdout.String(), p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// stop ends the program and waits for run to return without an error.
func (p *program) stop(t *testing.T) {
	t.Helper()
	p.cancel()
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
}

// waitServers waits until c lists exactly machine ONLINE.
func waitServers(t *testing.T, c *bench.Client, machine string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ss, err := c.Servers(context.Background(), bench.Selector{})
		if err != nil {
			t.Fatal(err)
		}
		if len(ss) == 1 && ss[0].Machine == machine {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("servers: got %+v, want %s", ss, machine)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBadFlagsNameTheProblem(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "nonsense"}, `listen address "nonsense"`},
		{[]string{"--listen", "127.0.0.1:99999"}, "port"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--local-agent", "--local-agent-id", "bad id"}, "machine id"},
		{[]string{"--audit-calls-max-bytes", "lots"}, "512MiB"},
		{[]string{"--audit-max-age", "-3d"}, "90d"},
		{[]string{"--snapshot-rate", "-1"}, "--snapshot-rate -1: want requests per second, or 0 for no limit"},
		{[]string{"--control-burst", "0"}, "--control-burst 0: want at least 1"},
		{[]string{"--session-rate", "-2"}, "--session-rate -2: want requests per second, or 0 for no limit"},
		{[]string{"--session-burst", "0"}, "--session-burst 0: want at least 1"},
		{[]string{"--max-sessions-per-app", "0"}, "--max-sessions-per-app 0: want at least 1"},
		{[]string{"--max-sessions-per-address", "-1"}, "--max-sessions-per-address -1: want sessions per address, or 0 for no cap"},
		// A store the audit does not fit in: refused, saying why.
		{[]string{"--audit-calls-max-bytes", "1PiB"}, "1.0 PiB (--audit-calls-max-bytes)"},
		{[]string{"--audit-max-bytes", "1PiB"}, "--no-durable-audit"},
		{[]string{"--history-retention", "0"}, "--history-retention must be above 0"},
		{[]string{"--history-retention", "soon"}, "want an age such as 90d"},
		{[]string{"--history-max-bytes", "lots"}, "512MiB"},
		{[]string{"--history-per-machine", "-1"}, "--history-per-machine -1: want a number of entries"},
		{[]string{"--pprof-listen", "0.0.0.0:6060"}, "--pprof-listen \"0.0.0.0:6060\": the profiler is served on loopback only"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			args := append([]string{"--data", t.TempDir()}, tt.args...)
			if tt.args[0] != "--listen" {
				args = append(args, "--listen", "127.0.0.1:0")
			}
			var stdout, stderr stacktest.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := run(ctx, args, &stdout, &stderr)
			if err == nil {
				t.Fatal("got no error")
			}
			if !strings.Contains(err.Error()+stderr.String(), tt.want) {
				t.Fatalf("got %q (stderr %q), want it to mention %q", err, stderr.String(), tt.want)
			}
			if tt.args[0] == "--pprof-listen" {
				// Refused as a flag: nothing written before.
				if entries, _ := os.ReadDir(args[1]); len(entries) != 0 {
					t.Fatalf("a refused --pprof-listen left %d entries in the data directory", len(entries))
				}
			}
		})
	}
}

// TestSiteUserTTLFlag: --site-user-ttl defaults to five minutes and is
// what the control service is given.
func TestSiteUserTTLFlag(t *testing.T) {
	o, err := parseFlags(nil, &stacktest.Buffer{})
	if err != nil || o.siteUserTTL != controlsvc.DefaultSiteUserTTL {
		t.Fatalf("default: %v %v", o.siteUserTTL, err)
	}
	if o, err = parseFlags([]string{"--site-user-ttl", "90s"}, &stacktest.Buffer{}); err != nil || o.siteUserTTL != 90*time.Second {
		t.Fatalf("--site-user-ttl 90s: %v %v", o.siteUserTTL, err)
	}
}

// TestAuditFlags: sizes and ages as people write them; --no-durable-audit
// lets cc-control start when the audit does not fit (here 1 PiB).
func TestAuditFlags(t *testing.T) {
	o, err := parseFlags([]string{"--audit-max-bytes", "2GiB", "--audit-calls-max-bytes", "1048576", "--audit-refused-max-bytes", "512kb",
		"--audit-calls-max-age", "7d", "--audit-max-age", "0", "--audit-refused-max-age", "36h"}, &stacktest.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	a := o.audit
	if a.Changes.MaxBytes != 2<<30 || a.Calls.MaxBytes != 1<<20 || a.Refused.MaxBytes != 512<<10 ||
		a.Calls.MaxAge != 7*24*time.Hour || a.Changes.MaxAge != 0 || a.Refused.MaxAge != 36*time.Hour || a.NotDurable {
		t.Fatalf("parsed %+v", a)
	}
	var stdout, stderr stacktest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--data", t.TempDir(), "--listen", "127.0.0.1:0", "--audit-calls-max-bytes", "1PiB", "--no-durable-audit"}, &stdout, &stderr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stdout.String(), "Query the fleet") {
		select {
		case err := <-done:
			t.Fatalf("cc-control --no-durable-audit did not start: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no welcome after 10s; stderr:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(stderr.String(), "NOT durable") {
		t.Errorf("no warning that the audit is not durable:\n%s", stderr.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestHistoryFlags: --history-retention and --history-max-bytes default
// to 30 days and 256 MiB and are what the control service is given.
func TestHistoryFlags(t *testing.T) {
	o, err := parseFlags(nil, &stacktest.Buffer{})
	if err != nil || o.history.Retention != controlsvc.DefaultHistoryRetention || o.history.MaxBytes != controlsvc.DefaultHistoryMaxBytes {
		t.Fatalf("defaults: %+v %v", o.history, err)
	}
	o, err = parseFlags([]string{"--history-retention", "7d", "--history-max-bytes", "64MiB", "--history-per-machine", "50"}, &stacktest.Buffer{})
	if err != nil || o.history.Retention != 7*24*time.Hour || o.history.MaxBytes != 64<<20 || o.history.PerMachine != 50 {
		t.Fatalf("parsed %+v %v", o.history, err)
	}
	for maxBytes, want := range map[int64]int64{controlsvc.DefaultHistoryMaxBytes: 1000, 512 << 10: 64, 64 << 10: 16} {
		if got := controlsvc.HistoryPerMachine(maxBytes); got != want {
			t.Errorf("per machine of a history of %d bytes: %d, want %d", maxBytes, got, want)
		}
	}
}
