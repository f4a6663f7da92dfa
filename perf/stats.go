// Package perf is the benchmark harness: it builds real fleets in-process
// (swarm), measures commandcontrol against a plain-NATS baseline in the
// same run, and reports each figure beside its baseline and target.
package perf

import (
	"fmt"
	"sort"
	"time"
)

// Durations summarises repeated timings.
type Durations []time.Duration

// Quantile returns the q-quantile (0..1), nearest rank.
func (d Durations) Quantile(q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append(Durations(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.5) - 1
	i = max(0, min(len(s)-1, i))
	return s[i]
}

// Row is one line of the report.
type Row struct {
	What     string
	Value    string
	Baseline string
	Ratio    float64 // Value / Baseline, 0 when there is no baseline
	Target   string
	Met      string // "yes", "NO", or "" when there is no target
	Note     string
}

// ratio formats a/b.
func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}
