package perf

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// idleRows runs the real cc-agent binary, registered and ONLINE, and
// measures its resident memory and CPU use while nobody calls it.
func idleRows(ctx context.Context, cfg Config) ([]Row, error) {
	st, err := startStack(ctx, cfg, 0, "", "")
	if err != nil {
		return nil, err
	}
	defer st.close()
	key := filepath.Join(st.dir, "idle-agent.nk")
	const id = "127.0.0.1_idle-agent"
	out, err := exec.CommandContext(ctx, cfg.AgentBinary, "--key", key, "--id", id, "--print-key").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --print-key: %w", cfg.AgentBinary, err)
	}
	var pub string
	for _, l := range strings.Split(string(out), "\n") {
		if k, ok := strings.CutPrefix(l, "key:"); ok {
			pub = strings.TrimSpace(k)
		}
	}
	if _, err := st.c.AddMachine(ctx, id, pub, nil); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, cfg.AgentBinary, "--key", key, "--id", id, "--server", st.svc.ClientURL(), "--log-level", "warn")
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := waitOnline(ctx, st.svc, 1, 30*time.Second); err != nil {
		return nil, err
	}
	time.Sleep(3 * time.Second) // start-up work done, first samples taken
	pid := cmd.Process.Pid
	t0, c0, err := cpuTicks(pid)
	if err != nil {
		return nil, err
	}
	var maxRSS int64
	deadline := time.Now().Add(cfg.IdleFor)
	for time.Now().Before(deadline) {
		if rss, err := rssKB(pid); err == nil && rss > maxRSS {
			maxRSS = rss
		}
		time.Sleep(time.Second)
	}
	t1, c1, err := cpuTicks(pid)
	if err != nil {
		return nil, err
	}
	cpu := 100 * float64(c1-c0) / 100 / t1.Sub(t0).Seconds() // clock ticks are 1/100 s
	rssMB := float64(maxRSS) / 1024
	return []Row{
		{What: fmt.Sprintf("agent idle RSS (max over %s)", cfg.IdleFor), Value: fmt.Sprintf("%.1f MB", rssMB), Target: "≤ 25 MB", Met: yes(rssMB <= 25)},
		{What: fmt.Sprintf("agent idle CPU (average over %s)", cfg.IdleFor), Value: fmt.Sprintf("%.3f %%", cpu), Target: "≤ 0.2 %", Met: yes(cpu <= 0.2)},
	}, nil
}

func rssKB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// cpuTicks reads utime+stime (clock ticks) of pid.
func cpuTicks(pid int) (time.Time, int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return time.Time{}, 0, err
	}
	s := string(b)
	rest := s[strings.LastIndexByte(s, ')')+2:]
	f := strings.Fields(rest)
	if len(f) < 13 {
		return time.Time{}, 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Now(), u + st, nil
}
