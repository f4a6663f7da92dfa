package perf

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"time"
)

// pythonFleetCall times cfg.Reps full-fleet calls of n agents through the
// Python SDK (sdk/python/bench/fanout.py, a process of its own) on the
// stack the Go SDK's calls goSDK were just timed on, and says how it
// compares.
func pythonFleetCall(ctx context.Context, cfg Config, st *stack, n int, goSDK Durations) Row {
	what := fmt.Sprintf("  the same through the Python SDK, %d agents (p50 / p99 over %d)", n, cfg.Reps)
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "sdk", "python", "bench", "fanout.py")
	ctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.Reps+1)*90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cfg.Python, script, "--server", st.url, "--key", st.key,
		"--expect", strconv.Itoa(n), "--reps", strconv.Itoa(cfg.Reps)).Output()
	if err != nil {
		msg := err.Error()
		if ee, ok := err.(*exec.ExitError); ok {
			msg += ": " + string(ee.Stderr)
		}
		return Row{What: what, Note: "failed: " + msg}
	}
	var r struct {
		P50 float64 `json:"p50_ms"`
		P99 float64 `json:"p99_ms"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return Row{What: what, Note: fmt.Sprintf("unreadable output %q: %v", out, err)}
	}
	p50 := time.Duration(r.P50 * float64(time.Millisecond))
	p99 := time.Duration(r.P99 * float64(time.Millisecond))
	g50 := goSDK.Quantile(0.5)
	return Row{What: what, Value: ms(p50) + " / " + ms(p99), Baseline: ms(g50) + " / " + ms(goSDK.Quantile(0.99)) + " (Go SDK)",
		Ratio: ratio(p50, g50), Note: "the baseline here is the Go SDK's call on the same fleet, just before"}
}
