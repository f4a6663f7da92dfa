// Command cc-perf is the benchmark harness: it builds real fleets in this
// process (simulated agents, each authorised through the callout), times
// full-fleet calls, single calls, authorisations, a broker restart,
// presence latency and the agent's idle footprint, and prints each figure
// beside its baseline measured in the same run and its target.
//
//	go run ./cmd/cc-perf                          # 1,000 / 10,000 / 50,000 agents
//	go run ./cmd/cc-perf --sizes 200 --reps 5     # a quick look
//	go run ./cmd/cc-perf --sizes 0 --restart 0 --idle 0 --sessions 10000 --city 1000   # sessions only
//	go run ./cmd/cc-perf --brokers 3 --control-replicas 2 --sizes 50000 --reps 10 --restart 0 --idle 0   # a cluster
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/commandcontrol/commandcontrol/internal/cli"
	"github.com/commandcontrol/commandcontrol/internal/version"
	"github.com/commandcontrol/commandcontrol/perf"
)

func main() { cli.Main("cc-perf", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == perf.RawBrokerCommand {
		// A broker of the baseline cluster (--brokers), run by cc-perf.
		return perf.RunRawBroker(ctx, args[1:])
	}
	fs := flag.NewFlagSet("cc-perf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sizes := fs.String("sizes", "1000,10000,50000", "fleet sizes for the full-fleet call (\"\" or 0 skips them)")
	reps := fs.Int("reps", 20, "full-fleet calls timed per size")
	direct := fs.Int("direct-reps", 1000, "single direct calls timed (each way)")
	presence := fs.Int("presence-reps", 100, "connect/close cycles for presence latency")
	restart := fs.Int("restart", 10000, "fleet size for the broker-restart measure (0 skips)")
	idle := fs.Duration("idle", 30*time.Second, "how long the agent's idle footprint is measured (0 skips)")
	agentBin := fs.String("agent-binary", "", "cc-agent binary for the idle measure (default: built from ./cmd/cc-agent)")
	sessions := fs.Int("sessions", 0, "sessions benchmark: simulate `N` sessions over WebSocket on one control service (0 skips it)")
	city := fs.Int("city", 1000, "sessions benchmark: how many of them are in the one city called")
	sessionReps := fs.Int("session-reps", 20, "sessions benchmark: calls timed on the city's sessions (each way)")
	python := fs.String("python", "", "also time each fleet size's full-fleet calls through the Python SDK, with this `INTERPRETER` (one with sdk/python installed, e.g. sdk/python/.venv/bin/python after make test-python)")
	brokers := fs.Int("brokers", 1, "run the fleet sizes on a cluster of `N` routed cc-broker processes (JetStream), with --control-replicas cc-control processes and the agents spread over the brokers; also measures one broker stopped and started again, and the brokers' memory per agent (1: one control service with its embedded broker)")
	replicas := fs.Int("control-replicas", 1, "with --brokers: cc-control processes, each with its own data directory holding the same keys")
	controlIdle := fs.Duration("control-idle", time.Minute, "at each fleet size, measure cc-control's CPU at rest for this long, the fleet connected (0 skips)")
	controlProfiles := fs.String("control-profiles", "", "write CPU profiles of cc-control over each size's admission run and rest into `DIR` in 2-second pieces (admission-N.K.prof, idle-N.K.prof; go tool pprof -top DIR/idle-N.*.prof merges them)")
	presenceLoad := fs.Int("presence-load-reps", 50, "at each fleet size, connect/close cycles for presence latency while full-fleet calls run (0 skips)")
	markdown := fs.Bool("markdown", false, "print the table as Markdown")
	verbose := fs.Bool("v", false, "log the control service and broker to stderr")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := version.Parse(fs, args); err != nil {
		return err
	}
	cfg := perf.Config{Reps: *reps, DirectReps: *direct, PresenceReps: *presence, RestartN: *restart, IdleFor: *idle, Progress: stderr,
		Sessions: *sessions, City: min(*city, *sessions), SessionReps: *sessionReps, Verbose: *verbose, Python: *python}
	cfg.Brokers, cfg.ControlReplicas = *brokers, *replicas
	cfg.ControlIdle, cfg.ControlProfiles, cfg.PresenceLoadReps = *controlIdle, *controlProfiles, *presenceLoad
	if *controlIdle < 0 || *presenceLoad < 0 {
		return fmt.Errorf("--control-idle %s --presence-load-reps %d: want 0 (skip) or more", *controlIdle, *presenceLoad)
	}
	if *controlProfiles != "" {
		if err := os.MkdirAll(*controlProfiles, 0o755); err != nil {
			return fmt.Errorf("--control-profiles: %w", err)
		}
	}
	if *brokers < 1 || *replicas < 1 || (*brokers == 1 && *replicas != 1) {
		return fmt.Errorf("--brokers %d --control-replicas %d: want at least one of each, and several replicas only with a cluster (--brokers 3)", *brokers, *replicas)
	}
	if *sessions < 0 || (*sessions > 0 && (*city < 1 || *sessionReps < 1)) {
		return fmt.Errorf("--sessions %d --city %d --session-reps %d: want --sessions 0 (skip) or more, and a city and repetitions of at least 1", *sessions, *city, *sessionReps)
	}
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	for _, s := range strings.Split(*sizes, ",") {
		if s = strings.TrimSpace(s); s == "" || s == "0" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("--sizes: %q is not a positive number", s)
		}
		cfg.Sizes = append(cfg.Sizes, n)
	}
	dir, err := os.MkdirTemp("", "cc-perf-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	build := func(name string) (string, error) {
		out := filepath.Join(dir, name)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/"+name)
		cmd.Stderr = stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("build %s (run cc-perf from the repository root): %w", name, err)
		}
		return out, nil
	}
	if cfg.SwarmBinary, err = build("cc-swarm"); err != nil {
		return err
	}
	if len(cfg.Sizes) > 0 || cfg.Sessions > 0 || cfg.Brokers > 1 {
		if cfg.ControlBinary, err = build("cc-control"); err != nil {
			return err
		}
	}
	if cfg.PerfBinary, err = os.Executable(); err != nil {
		return err
	}
	if cfg.Brokers > 1 {
		if cfg.BrokerBinary, err = build("cc-broker"); err != nil {
			return err
		}
	}
	if *idle > 0 {
		cfg.AgentBinary = *agentBin
		if cfg.AgentBinary == "" {
			if cfg.AgentBinary, err = build("cc-agent"); err != nil {
				return err
			}
		}
	}
	fmt.Fprintf(stderr, "cc-perf on %s/%s, %d CPUs, %s\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	if *cpuProfile != "" {
		stop, err := cli.StartCPUProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	start := time.Now()
	rows, err := perf.Run(ctx, cfg)
	print(stdout, rows, *markdown)
	fmt.Fprintf(stderr, "took %s\n", time.Since(start).Round(time.Second))
	return err
}

func print(w io.Writer, rows []perf.Row, markdown bool) {
	head := []string{"measure", "commandcontrol", "baseline (same run)", "ratio", "target", "met", "note"}
	line := func(r perf.Row) []string {
		ratio := ""
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f×", r.Ratio)
		}
		return []string{r.What, r.Value, r.Baseline, ratio, r.Target, r.Met, r.Note}
	}
	if markdown {
		fmt.Fprintln(w, "| "+strings.Join(head, " | ")+" |")
		fmt.Fprintln(w, strings.Repeat("|---", len(head))+"|")
		for _, r := range rows {
			fmt.Fprintln(w, "| "+strings.Join(line(r), " | ")+" |")
		}
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.ToUpper(strings.Join(head, "\t")))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(line(r), "\t"))
	}
	tw.Flush()
}
