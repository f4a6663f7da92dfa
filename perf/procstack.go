package perf

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/commandcontrol/commandcontrol/swarm"
)

// idleSettle is the pause between a fleet's admission and its rest.
const idleSettle = 30 * time.Second

// tick is one clock tick of /proc/<pid>/stat's utime and stime.
const tick = 10 * time.Millisecond

// startProcStack is startStack with the control service and its
// embedded broker in a cc-control process of their own
// (cfg.ControlBinary), so their CPU time is theirs alone: the fleet is
// registered first (cc-swarm --register-only, keeping the members' keys),
// then connected by cc-swarm children that only connect, and the
// process's CPU over that admission run is st.admitCPU.
func startProcStack(ctx context.Context, cfg Config, n int) (*stack, error) {
	dir, err := os.MkdirTemp("", "cc-perf-")
	if err != nil {
		return nil, err
	}
	st := &stack{dir: dir}
	var extra []string
	if cfg.ControlProfiles != "" {
		pp, err := freePort()
		if err != nil {
			return nil, err
		}
		st.pprof = "http://" + pp + "/debug/pprof/profile"
		extra = append(extra, "--pprof-listen", pp)
	}
	cp, err := startControlProc(ctx, cfg, filepath.Join(dir, "data"), "", extra...)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	st.cp, st.c, st.url, st.key = cp, cp.c, cp.url, cp.key
	if n == 0 {
		return st, nil
	}
	var children [][]string
	for i := 0; i*perChild < n; i++ {
		share := min(perChild, n-i*perChild)
		keys := filepath.Join(dir, fmt.Sprintf("members-%d.keys", i))
		args := []string{"--server", st.url, "--agents", strconv.Itoa(share), "--prefix", fmt.Sprintf("perf%d-", i), "--keys", keys}
		reg := exec.CommandContext(ctx, cfg.SwarmBinary, append(args, "--key", st.key, "--register-only")...)
		reg.Stderr = os.Stderr
		if out, err := reg.Output(); err != nil {
			st.close()
			return nil, fmt.Errorf("register swarm %d: %w (%s)", i, err, out)
		}
		children = append(children, args)
	}
	// Registration is over: what the process spends from here until the
	// whole fleet is ONLINE is admission (the callout, the broker's side
	// of it, presence, the members' subscriptions, the log line each).
	_, before, err := cpuTicks(cp.cmd.Process.Pid)
	if err != nil {
		st.close()
		return nil, err
	}
	stopProfile := st.profile(cfg, fmt.Sprintf("admission-%d", n))
	start := time.Now()
	procs, connect, err := spawnChildren(ctx, cfg.SwarmBinary, children, os.Stderr)
	if err != nil {
		stopProfile()
		st.close()
		return nil, err
	}
	st.procs, st.connect = procs, connect
	if _, err := waitCount(ctx, "machines ONLINE", n, 5*time.Minute, func() (int, error) { return onlineCount(ctx, st.c) }); err != nil {
		stopProfile()
		st.close()
		return nil, err
	}
	st.online = time.Since(start)
	_, after, err := cpuTicks(cp.cmd.Process.Pid)
	if err != nil {
		stopProfile()
		st.close()
		return nil, err
	}
	stopProfile()
	st.admitCPU = time.Duration(after-before) * tick
	st.first = swarm.MachineID("perf0-", 0)
	return st, nil
}

// controlIdle is the cc-control process's CPU per minute over d with the
// fleet connected and nobody asking anything, after a settling pause:
// for some seconds after a storm of 10,000 admissions the service still
// writes their presence history and last-seen records.
func (st *stack) controlIdle(ctx context.Context, cfg Config, n int, d time.Duration) (perMinute time.Duration, err error) {
	select {
	case <-time.After(idleSettle):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	pid := st.cp.cmd.Process.Pid
	t0, before, err := cpuTicks(pid)
	if err != nil {
		return 0, err
	}
	stopProfile := st.profile(cfg, fmt.Sprintf("idle-%d", n))
	select {
	case <-time.After(d):
	case <-ctx.Done():
		stopProfile()
		return 0, ctx.Err()
	}
	t1, after, err := cpuTicks(pid)
	stopProfile()
	if err != nil {
		return 0, err
	}
	cpu := time.Duration(after-before) * tick
	return time.Duration(float64(cpu) * float64(time.Minute) / float64(t1.Sub(t0))), nil
}

// profile fetches CPU profiles of cc-control into cfg.ControlProfiles,
// in 2-second pieces named name.1.prof, name.2.prof… from now until the
// returned func is called (it waits for the piece under way), so a
// window of unknown length is covered: go tool pprof merges the pieces
// given together. Without --control-profiles it does nothing.
func (st *stack) profile(cfg Config, name string) (stop func()) {
	if cfg.ControlProfiles == "" || st.pprof == "" {
		return func() {}
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for k := 1; ; k++ {
			if err := fetchProfile(st.pprof+"?seconds=2", filepath.Join(cfg.ControlProfiles, fmt.Sprintf("%s.%d.prof", name, k))); err != nil {
				fmt.Fprintf(cfg.Progress, "profile %s: %v\n", name, err)
				return
			}
			select {
			case <-quit:
				return
			default:
			}
		}
	}()
	return func() { close(quit); <-done }
}

func fetchProfile(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
