package functions

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
)

// readLoad reads <root>/proc/loadavg, /proc/stat and /proc/pressure/*.
func readLoad(_ context.Context, root string) (*LoadReply, error) {
	proc := filepath.Join(root, "proc")
	text, err := os.ReadFile(filepath.Join(proc, "loadavg"))
	if err != nil {
		return nil, errUnavailable("cannot read load averages: %v", err)
	}
	la, err := parseLoadavg(string(text))
	if err != nil {
		return nil, err
	}
	r := &LoadReply{Load1: la.load1, Load5: la.load5, Load15: la.load15, CPUs: runtime.NumCPU()}
	if data, err := os.ReadFile(filepath.Join(proc, "stat")); err == nil {
		if st, err := parseProcStat(data); err == nil {
			r.ProcsRunning, r.ProcsBlocked = st.procsRunning, st.procsBlocked
			if len(st.perCPU) > 0 {
				r.CPUs = len(st.perCPU)
			}
		}
	}
	for _, res := range []string{"cpu", "memory", "io"} {
		data, err := os.ReadFile(filepath.Join(proc, "pressure", res))
		if err != nil {
			continue // no PSI: kernel < 4.20 or psi=0
		}
		if p, err := parsePSI(string(data)); err == nil {
			if r.Pressure == nil {
				r.Pressure = map[string]map[string]float64{}
			}
			r.Pressure[res] = p
		}
	}
	return r, nil
}
