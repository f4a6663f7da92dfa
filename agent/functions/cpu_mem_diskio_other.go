//go:build !linux

package functions

import (
	"context"
	"errors"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
)

// readIOSample asks gopsutil for CPU times and disk counters; root is not
// used off Linux. The sampler stamps the reading with its clock.
func readIOSample(ctx context.Context, _ string) (*ioSample, error) {
	s := &ioSample{}
	total, err := cpu.TimesWithContext(ctx, false)
	if err != nil {
		return nil, err
	}
	if len(total) == 0 {
		return nil, errors.New("no CPU times reported")
	}
	s.cpu.total = fromPsutil(total[0])
	if per, err := cpu.TimesWithContext(ctx, true); err == nil {
		for _, t := range per {
			s.cpu.perCPU = append(s.cpu.perCPU, fromPsutil(t))
		}
	}
	if io, err := disk.IOCountersWithContext(ctx); err == nil {
		for name, d := range io {
			s.disks = append(s.disks, diskCounters{name: name, reads: d.ReadCount, writes: d.WriteCount,
				readBytes: d.ReadBytes, writeBytes: d.WriteBytes, ioTimeMs: d.IoTime})
		}
	}
	return s, nil
}

func fromPsutil(t cpu.TimesStat) cpuTimes {
	return cpuTimes{t.User, t.Nice, t.System, t.Idle, t.Iowait, t.Irq, t.Softirq, t.Steal, t.Guest, t.GuestNice}
}
