package perf

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// Config chooses what the harness measures.
type Config struct {
	// Sizes are the fleet sizes for the full-fleet call (e.g. 1000, 10000, 50000).
	Sizes []int
	// Reps is how many full-fleet calls are timed per size.
	Reps int
	// DirectReps is how many single direct calls are timed.
	DirectReps int
	// PresenceReps is how many connect/close cycles presence latency is
	// measured over.
	PresenceReps int
	// RestartN is the fleet size for the broker-restart measure (0 skips it).
	RestartN int
	// AgentBinary, when set, is a built cc-agent whose idle footprint is
	// measured for IdleFor.
	AgentBinary string
	IdleFor     time.Duration
	// SwarmBinary is a built cc-swarm: fleets run in child processes, at
	// most 15,000 agents each (the per-process open-file limit).
	SwarmBinary string
	// Sessions, when above 0, runs the sessions benchmark: that many
	// simulated sessions over WebSocket, City of them in one city called
	// SessionReps times, against plain WebSocket responders.
	Sessions, City, SessionReps int
	// ControlBinary is a built cc-control: the sessions benchmark runs
	// the control service in a process of its own, to read its memory.
	ControlBinary string
	// Python, when set, is a Python interpreter with the SDK in
	// sdk/python installed: each fleet size is also called through it
	// (sdk/python/bench/fanout.py), beside the Go SDK, in the same run.
	Python string
	// Brokers, above 1, runs the fleet sizes on a cluster of that many
	// routed cc-broker processes (BrokerBinary) with ControlReplicas
	// cc-control processes (ControlBinary) instead of one control service
	// with its embedded broker; PerfBinary (this program) runs the plain
	// brokers of the baseline cluster (RunRawBroker).
	Brokers, ControlReplicas int
	BrokerBinary, PerfBinary string
	// ControlIdle, above 0, measures cc-control's CPU at rest for that
	// long at each fleet size, the fleet connected and nothing asked.
	ControlIdle time.Duration
	// ControlProfiles, when set, is a directory for CPU profiles of
	// cc-control over each size's admission run and rest.
	ControlProfiles string
	// PresenceLoadReps is how many connect/close cycles presence latency
	// is measured over at each size while full-fleet calls run.
	PresenceLoadReps int
	// Verbose copies cc-control's log to Progress.
	Verbose bool
	// Progress receives a line per step; nil discards.
	Progress io.Writer
	Logger   *slog.Logger
}

// Run measures everything cfg asks for and returns the report rows.
func Run(ctx context.Context, cfg Config) ([]Row, error) {
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	raiseFileLimit()
	var rows []Row
	limit := fileLimit()
	for i, n := range cfg.Sizes {
		if cfg.Brokers > 1 {
			if share := n * 105 / 100 / cfg.Brokers; share > limit-500 {
				rows = append(rows, Row{What: fmt.Sprintf("cluster, %d agents", n), Value: "not measured", Met: "NO",
					Note: fmt.Sprintf("each of the %d brokers would hold about %d connections, over the %d open files a process may have here: add brokers (--brokers)", cfg.Brokers, share, limit)})
				continue
			}
			waitQuiet(ctx, cfg.Progress)
			r, err := clusterRows(ctx, cfg, n)
			rows = append(rows, r...)
			if err != nil {
				return rows, fmt.Errorf("cluster, fleet of %d: %w", n, err)
			}
			continue
		}
		if n > limit-500 {
			rows = append(rows, Row{What: fmt.Sprintf("full-fleet call, %d agents", n), Value: "not measured",
				Met: "NO", Note: fmt.Sprintf("one broker process may hold at most %d open files here (hard limit; raising it needs CAP_SYS_RESOURCE, which this machine does not grant), and every agent connection is one", limit)})
			continue
		}
		waitQuiet(ctx, cfg.Progress)
		r, err := fanoutRows(ctx, cfg, n, i == 0)
		if err != nil {
			return rows, fmt.Errorf("fleet of %d: %w", n, err)
		}
		rows = append(rows, r...)
	}
	if cfg.Sessions > 0 {
		if cfg.Sessions > limit-500 {
			rows = append(rows, Row{What: fmt.Sprintf("sessions benchmark, %d sessions", cfg.Sessions), Value: "not measured", Met: "NO",
				Note: fmt.Sprintf("one broker process may hold at most %d open files here, and every session connection is one", limit)})
		} else {
			waitQuiet(ctx, cfg.Progress)
			r, err := sessionRows(ctx, cfg)
			if err != nil {
				return rows, fmt.Errorf("sessions: %w", err)
			}
			rows = append(rows, r...)
		}
	}
	if cfg.RestartN > 0 {
		waitQuiet(ctx, cfg.Progress)
		fmt.Fprintf(cfg.Progress, "broker restart with %d agents…\n", cfg.RestartN)
		r, err := restartRow(ctx, cfg, cfg.RestartN)
		if err != nil {
			return rows, fmt.Errorf("restart: %w", err)
		}
		rows = append(rows, r)
	}
	if cfg.AgentBinary != "" {
		fmt.Fprintf(cfg.Progress, "agent idle footprint for %s…\n", cfg.IdleFor)
		r, err := idleRows(ctx, cfg)
		if err != nil {
			return rows, fmt.Errorf("idle footprint: %w", err)
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

var fanoutTargets = map[int]time.Duration{10000: 400 * time.Millisecond, 50000: 2 * time.Second}

func fanoutRows(ctx context.Context, cfg Config, n int, first bool) ([]Row, error) {
	fmt.Fprintf(cfg.Progress, "fleet of %d: registering, then connecting (cc-control in a process of its own)…\n", n)
	st, err := startProcStack(ctx, cfg, n)
	if err != nil {
		return nil, err
	}
	defer st.close()
	rate := float64(n) / st.online.Seconds()
	perAdmission := st.admitCPU / time.Duration(n)
	rows := []Row{{
		What:   fmt.Sprintf("authorisations through the callout (%d registered agents connecting)", n),
		Value:  fmt.Sprintf("%.0f /s", rate),
		Target: "≥ 5,000 /s", Met: yes(rate >= 5000),
		Note: fmt.Sprintf("from spawning the simulators to all ONLINE: %s (slowest simulator connected its share in %s; simulators share the 2 CPUs)", st.online.Round(time.Millisecond), st.connect.Round(time.Millisecond)),
	}, {
		What:   fmt.Sprintf("  cc-control CPU per admission (%d agents; broker and control service, from /proc)", n),
		Value:  fmt.Sprintf("%d µs", perAdmission.Microseconds()),
		Target: "≤ 250 µs", Met: yes(perAdmission <= 250*time.Microsecond),
		Note: fmt.Sprintf("%s of CPU over the %s from spawning the registered simulators to all ONLINE, one log line per connection included", st.admitCPU.Round(10*time.Millisecond), st.online.Round(time.Millisecond)),
	}}
	if cfg.ControlIdle > 0 {
		fmt.Fprintf(cfg.Progress, "fleet of %d: cc-control at rest for %s…\n", n, cfg.ControlIdle)
		idle, err := st.controlIdle(ctx, cfg, n, cfg.ControlIdle)
		if err != nil {
			return nil, err
		}
		target, met := "—", ""
		if n >= 10000 {
			target, met = "≤ 1.5 s/min at 10,000", yes(idle <= 1500*time.Millisecond*time.Duration(n)/10000)
		}
		rows = append(rows, Row{What: fmt.Sprintf("  cc-control at rest, %d agents connected (CPU per minute)", n),
			Value: fmt.Sprintf("%.2f s/min", idle.Seconds()), Target: target, Met: met,
			Note: fmt.Sprintf("utime+stime over %s, nothing asked (%.1f %% of a core)", cfg.ControlIdle, idle.Seconds()/60*100)})
	}
	fmt.Fprintf(cfg.Progress, "fleet of %d: %d full-fleet calls…\n", n, cfg.Reps)
	d, resent, err := fleetCall(ctx, st.c, n, cfg.Reps)
	if err != nil {
		return nil, err
	}
	if cfg.Python != "" {
		fmt.Fprintf(cfg.Progress, "fleet of %d: %d full-fleet calls through the Python SDK…\n", n, cfg.Reps)
		rows = append(rows, pythonFleetCall(ctx, cfg, st, n, d))
	}
	if cfg.PresenceLoadReps > 0 {
		fmt.Fprintf(cfg.Progress, "fleet of %d: presence latency while full-fleet calls run, %d cycles…\n", n, cfg.PresenceLoadReps)
		r, err := presenceUnderLoad(ctx, st, n, cfg.PresenceLoadReps)
		if err != nil {
			return nil, err
		}
		rows = append(rows, r...)
	}
	if first {
		r, err := directAndPresence(ctx, cfg, st)
		if err != nil {
			return nil, err
		}
		rows = append(rows, r...)
	}
	st.close()
	fmt.Fprintf(cfg.Progress, "fleet of %d: baseline (plain nats.go fan-out)…\n", n)
	raw, err := rawFanout(ctx, cfg, n, cfg.Reps)
	if err != nil {
		rows = append(rows, Row{What: fmt.Sprintf("full-fleet call, %d agents, all replies in (p50 / p99 over %d)", n, cfg.Reps),
			Value: ms(d.Quantile(0.5)) + " / " + ms(d.Quantile(0.99)), Note: "baseline failed: " + err.Error()})
		return rows, nil
	}
	p50, p99, r50, r99 := d.Quantile(0.5), d.Quantile(0.99), raw.Quantile(0.5), raw.Quantile(0.99)
	target, met := "—", ""
	if t, ok := fanoutTargets[n]; ok {
		target, met = "≤ "+ms(t)+" p50", yes(p50 <= t)
	}
	rows = append(rows, Row{
		What:  fmt.Sprintf("full-fleet call, %d agents, all replies in (p50 / p99 over %d)", n, cfg.Reps),
		Value: ms(p50) + " / " + ms(p99), Baseline: ms(r50) + " / " + ms(r99),
		Ratio: ratio(p50, r50), Target: target, Met: met,
		Note: fmt.Sprintf("%d copies re-sent to machines not answered yet, over the %d calls", resent, cfg.Reps),
	}, Row{
		What: fmt.Sprintf("  overhead against raw fan-out, %d agents (p50 ratio)", n), Value: fmt.Sprintf("%.2f×", ratio(p50, r50)),
		Target: "≤ 1.25×", Met: yes(ratio(p50, r50) <= 1.25),
	}, Row{
		What: fmt.Sprintf("  tail against raw fan-out, %d agents (p99 ratio)", n), Value: fmt.Sprintf("%.2f×", ratio(p99, r99)),
		Target: "≤ 2×", Met: yes(ratio(p99, r99) <= 2),
	})
	return rows, nil
}

// presenceUnderLoad measures presence latency (presenceLatency) while a
// full-fleet call of the n agents runs, one after another, throughout.
func presenceUnderLoad(ctx context.Context, st *stack, n, reps int) ([]Row, error) {
	// The watcher is a workbench of its own, as an operator watching
	// while another calls would be: not queued behind the call's replies
	// on the caller's connection.
	watcher, err := bench.Connect(st.url, bench.WithSeedFile(st.key), bench.WithName("cc-perf (watcher)"))
	if err != nil {
		return nil, err
	}
	defer watcher.Close()
	lctx, stop := context.WithCancel(ctx)
	calls := make(chan int, 1)
	go func() {
		done := 0
		for lctx.Err() == nil {
			// The probe joins and leaves meanwhile: a call may expect
			// n+1 answers, so it is counted, not checked.
			if _, err := st.c.Stream(lctx, fleet.FnCurrentLoad, nil, bench.CallOptions{Timeout: 60 * time.Second}, func(bench.Reply) {}); err == nil {
				done++
			}
		}
		calls <- done
	}()
	join, leave, err := presenceLatency(ctx, st, watcher, "127.0.0.1_presence-probe-load", reps)
	stop()
	done := <-calls
	if err != nil {
		return nil, err
	}
	var rows []Row
	for _, x := range []struct {
		what string
		d    Durations
	}{{"connect → joined", join}, {"close → left", leave}} {
		rows = append(rows, Row{What: fmt.Sprintf("  presence under load, %d agents: %s at a watcher (p50 / p99 over %d)", n, x.what, reps),
			Value: ms(x.d.Quantile(0.5)) + " / " + ms(x.d.Quantile(0.99)), Target: "≤ 5 ms p99", Met: yes(x.d.Quantile(0.99) <= 5*time.Millisecond),
			Note: fmt.Sprintf("%d full-fleet calls completed meanwhile, one at a time", done)})
	}
	return rows, nil
}

func directAndPresence(ctx context.Context, cfg Config, st *stack) ([]Row, error) {
	fmt.Fprintf(cfg.Progress, "single direct call, %d times each way…\n", cfg.DirectReps)
	sdk, raw, err := directCall(ctx, st.c, st.first, cfg.DirectReps)
	if err != nil {
		return nil, err
	}
	rows := []Row{{
		What:  fmt.Sprintf("single direct call (p50 / p99 over %d)", cfg.DirectReps),
		Value: ms(sdk.Quantile(0.5)) + " / " + ms(sdk.Quantile(0.99)), Baseline: ms(raw.Quantile(0.5)) + " / " + ms(raw.Quantile(0.99)),
		Ratio: ratio(sdk.Quantile(0.5), raw.Quantile(0.5)), Target: "≤ 1.1× raw", Met: yes(ratio(sdk.Quantile(0.5), raw.Quantile(0.5)) <= 1.1),
	}}
	fmt.Fprintf(cfg.Progress, "presence latency, %d connect/close cycles…\n", cfg.PresenceReps)
	join, leave, err := presenceLatency(ctx, st, nil, "127.0.0.1_presence-probe", cfg.PresenceReps)
	if err != nil {
		return nil, err
	}
	for _, x := range []struct {
		what string
		d    Durations
	}{{"presence: connect → joined at a watcher (p50 / p99)", join}, {"presence: close → left at a watcher (p50 / p99)", leave}} {
		rows = append(rows, Row{What: x.what, Value: ms(x.d.Quantile(0.5)) + " / " + ms(x.d.Quantile(0.99)),
			Target: "≤ 50 ms p99", Met: yes(x.d.Quantile(0.99) <= 50*time.Millisecond)})
	}
	return rows, nil
}

// fileLimit is the open-file limit after raiseFileLimit.
func fileLimit() int {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return 1 << 20
	}
	return int(min(l.Cur, 1<<30))
}

// raiseFileLimit lifts the open-file limit: tens of thousands of
// connections, both ends in this process.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return
	}
	want := uint64(400000)
	if l.Max < want {
		raised := l
		raised.Max, raised.Cur = want, want
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			return
		}
	}
	l.Cur = l.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
}
