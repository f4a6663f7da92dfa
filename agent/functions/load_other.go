//go:build !linux

package functions

import (
	"context"
	"runtime"

	"github.com/shirou/gopsutil/v4/load"
)

// readLoad asks gopsutil; root is not used off Linux. Windows has no load
// average: gopsutil's is an emulation, and the reply says so.
func readLoad(ctx context.Context, _ string) (*LoadReply, error) {
	r := &LoadReply{CPUs: runtime.NumCPU(), Emulated: runtime.GOOS == "windows"}
	if avg, err := load.AvgWithContext(ctx); err == nil {
		r.Load1, r.Load5, r.Load15 = avg.Load1, avg.Load5, avg.Load15
	}
	if misc, err := load.MiscWithContext(ctx); err == nil {
		r.ProcsRunning, r.ProcsBlocked = misc.ProcsRunning, misc.ProcsBlocked
	}
	return r, nil
}
