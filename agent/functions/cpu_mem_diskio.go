package functions

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/shirou/gopsutil/v4/mem"
)

func init() { Register(fleet.FnCurrentCPUMemDiskIO, newCPUMemDiskIO) }

// DefaultSampleInterval is how often the cpu/disk sampler reads counters.
const DefaultSampleInterval = 5 * time.Second

// CPUMemDiskIOReply answers current-cpu-mem-diskio. CPU and disk figures are
// rates between the sampler's last two readings; memory is read at call
// time. A call made before the sampler has two readings measures over a
// short window itself ([firstWindow]); WarmingUp is true only when it could
// not (the call's deadline too close, or a reading failed), and the rate
// fields are then absent.
type CPUMemDiskIOReply struct {
	CPUPercent *float64  `json:"cpu_percent,omitempty"`
	CPUPerCore []float64 `json:"cpu_per_core,omitempty"`
	Memory     Memory    `json:"memory"`
	Swap       Swap      `json:"swap"`
	// CgroupMemory is the memory limit of the agent's cgroup (a container,
	// or a systemd MemoryMax) when one is set.
	CgroupMemory          *CgroupMemory `json:"cgroup_memory,omitempty"`
	Disks                 []DiskIO      `json:"disks,omitempty"`
	SampleIntervalSeconds float64       `json:"sample_interval_seconds,omitempty"`
	SampledAt             time.Time     `json:"sampled_at,omitzero"`
	WarmingUp             bool          `json:"warming_up,omitempty"`
	Notes                 []string      `json:"notes,omitempty"`
}

// Memory is physical memory in bytes.
type Memory struct {
	Total       uint64  `json:"total"`
	Used        uint64  `json:"used"`
	Available   uint64  `json:"available"`
	UsedPercent float64 `json:"used_percent"`
}

// Swap is swap space in bytes.
type Swap struct {
	Total       uint64  `json:"total"`
	Used        uint64  `json:"used"`
	UsedPercent float64 `json:"used_percent"`
}

// DiskIO is one block device's I/O rates over the sample interval.
type DiskIO struct {
	Name             string  `json:"name"`
	ReadBytesPerSec  float64 `json:"read_bytes_per_sec"`
	WriteBytesPerSec float64 `json:"write_bytes_per_sec"`
	ReadsPerSec      float64 `json:"reads_per_sec"`
	WritesPerSec     float64 `json:"writes_per_sec"`
	UtilPercent      float64 `json:"util_percent"`
}

// ioSample is one reading of the cumulative counters.
type ioSample struct {
	at    time.Time
	cpu   procStat
	disks []diskCounters
}

// cpuMemDiskIO is the function and its background sampler ([Runner]).
type cpuMemDiskIO struct {
	root     string
	interval time.Duration // between readings
	warmup   time.Duration // between the first and second reading
	read     func(ctx context.Context, root string) (*ioSample, error)
	now      func() time.Time // Env.Now: stamps readings that read left unstamped
	// window is how long a call made before the sampler has two readings
	// measures over itself (like vmstat 1 2); 0 means do not.
	window time.Duration
	// sleep waits d or until ctx ends (then it returns ctx's error);
	// until is the time left before a deadline. nil means real time;
	// tests inject both.
	sleep func(ctx context.Context, d time.Duration) error
	until func(deadline time.Time) time.Duration

	mu        sync.Mutex
	prev, cur *ioSample
	lastErr   error
}

func newCPUMemDiskIO(env *Env) (Function, error) {
	return &cpuMemDiskIO{root: env.Root, interval: DefaultSampleInterval, warmup: time.Second,
		window: firstWindow, read: readIOSample, now: env.clock()}, nil
}

// firstWindow is the span the first call measures over when the sampler
// has no rate yet: long enough for jiffies to count, short enough to wait.
const firstWindow = time.Second

func (f *cpuMemDiskIO) Spec() Spec {
	return Spec{
		Name:     fleet.FnCurrentCPUMemDiskIO,
		Help:     "CPU use (total and per core), memory, swap and per-disk I/O rates from a background sampler",
		ReadOnly: fleet.ReadOnlyBuiltin(fleet.FnCurrentCPUMemDiskIO),
	}
}

// Run samples at once, again one second later so a fresh agent soon has
// rates, then every interval until ctx ends. (A call before that second
// reading measures its own span: [cpuMemDiskIO.measureFirst].)
func (f *cpuMemDiskIO) Run(ctx context.Context) {
	f.sample(ctx)
	t := time.NewTimer(f.warmup)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.sample(ctx)
		t.Reset(f.interval)
	}
}

// minSampleGap is the shortest span rates are computed over: jiffies tick
// every 10 ms, so shorter spans give noise.
const minSampleGap = 200 * time.Millisecond

// sample takes one reading and keeps the last two. A reading less than
// [minSampleGap] after the previous one (a call's baseline racing the
// sampler's first reading) replaces it instead.
func (f *cpuMemDiskIO) sample(ctx context.Context) {
	now := time.Now
	if f.now != nil {
		now = f.now
	}
	at := now()
	s, err := f.read(ctx, f.root)
	if err == nil && s.at.IsZero() {
		s.at = at
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastErr = err
	switch {
	case err != nil:
	case f.cur != nil && s.at.Sub(f.cur.at) < minSampleGap:
		f.cur = s
	default:
		f.prev, f.cur = f.cur, s
	}
}

func (f *cpuMemDiskIO) Call(ctx context.Context, _ Args) (any, error) {
	f.mu.Lock()
	empty := f.cur == nil
	f.mu.Unlock()
	if empty {
		f.sample(ctx) // a baseline, so the next call (or sample) has a rate
	}
	f.measureFirst(ctx)
	r := &CPUMemDiskIOReply{}
	f.mu.Lock()
	prev, cur, lastErr := f.prev, f.cur, f.lastErr
	f.mu.Unlock()
	if prev == nil || cur == nil {
		r.WarmingUp = true
		r.Notes = append(r.Notes, "the sampler has fewer than two readings yet; CPU and disk rates follow within seconds")
	} else {
		fillRates(r, prev, cur)
	}
	if lastErr != nil {
		r.Notes = append(r.Notes, "last sample failed: "+lastErr.Error())
	}
	if err := fillMemory(ctx, f.root, r); err != nil {
		r.Notes = append(r.Notes, "memory: "+err.Error())
	}
	r.CgroupMemory = readCgroupMemory(f.root)
	return r, nil
}

// measureFirst gives a call made before the sampler has two readings a
// rate of its own: it waits until [cpuMemDiskIO.window] has passed since
// the first reading and takes the second, as vmstat 1 2 does. The wait is
// at most half the time left before ctx's deadline, and none when that
// leaves less than [minSampleGap]; a ctx that ends cuts it short.
func (f *cpuMemDiskIO) measureFirst(ctx context.Context) {
	f.mu.Lock()
	prev, cur := f.prev, f.cur
	f.mu.Unlock()
	if prev != nil || cur == nil || f.window <= 0 {
		return
	}
	now, sleep, until := time.Now, f.sleep, f.until
	if f.now != nil {
		now = f.now
	}
	if sleep == nil {
		sleep = sleepCtx
	}
	if until == nil {
		until = time.Until
	}
	wait := f.window - now().Sub(cur.at)
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, until(dl)/2)
	}
	if now().Add(wait).Sub(cur.at) < minSampleGap {
		return // too close to the deadline for a meaningful span
	}
	if wait > 0 && sleep(ctx, wait) != nil {
		return
	}
	f.mu.Lock()
	done := f.prev != nil // the sampler's second reading came meanwhile
	f.mu.Unlock()
	if !done {
		f.sample(ctx)
	}
}

// sleepCtx waits d, or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// fillRates computes CPU and disk rates between two readings.
func fillRates(r *CPUMemDiskIOReply, prev, cur *ioSample) {
	dt := cur.at.Sub(prev.at).Seconds()
	r.SampleIntervalSeconds = round2(dt)
	r.SampledAt = cur.at.UTC().Truncate(time.Millisecond)
	total := cpuPercent(prev.cpu.total, cur.cpu.total)
	r.CPUPercent = &total
	if len(prev.cpu.perCPU) == len(cur.cpu.perCPU) {
		for i := range cur.cpu.perCPU {
			r.CPUPerCore = append(r.CPUPerCore, cpuPercent(prev.cpu.perCPU[i], cur.cpu.perCPU[i]))
		}
	}
	r.Disks = diskRates(prev.disks, cur.disks, dt)
}

// cpuPercent is the share of time not idle between two readings, 0–100.
func cpuPercent(a, b cpuTimes) float64 {
	dt := b.total() - a.total()
	if dt <= 0 {
		return 0
	}
	return round2(math.Max(0, math.Min(100, (b.busy()-a.busy())/dt*100)))
}

// diskRates matches devices by name; a device present in only one reading
// (hot-plugged) is left out, as is a counter that went backwards.
func diskRates(prev, cur []diskCounters, dt float64) []DiskIO {
	if dt <= 0 {
		return nil
	}
	before := make(map[string]diskCounters, len(prev))
	for _, d := range prev {
		before[d.name] = d
	}
	out := []DiskIO{}
	for _, c := range cur {
		p, ok := before[c.name]
		if !ok || c.reads < p.reads || c.writes < p.writes || c.ioTimeMs < p.ioTimeMs {
			continue
		}
		rate := func(a, b uint64) float64 { return round2(float64(b-a) / dt) }
		out = append(out, DiskIO{
			Name:             c.name,
			ReadBytesPerSec:  rate(p.readBytes, c.readBytes),
			WriteBytesPerSec: rate(p.writeBytes, c.writeBytes),
			ReadsPerSec:      rate(p.reads, c.reads),
			WritesPerSec:     rate(p.writes, c.writes),
			UtilPercent:      round2(math.Min(100, float64(c.ioTimeMs-p.ioTimeMs)/(dt*1000)*100)),
		})
	}
	return out
}

// fillMemory reads memory and swap now.
func fillMemory(ctx context.Context, root string, r *CPUMemDiskIOReply) error {
	ctx = psutilContext(ctx, root)
	vm, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return err
	}
	r.Memory = Memory{Total: vm.Total, Used: vm.Used, Available: vm.Available, UsedPercent: round2(vm.UsedPercent)}
	sw, err := mem.SwapMemoryWithContext(ctx)
	if err != nil {
		return err
	}
	r.Swap = Swap{Total: sw.Total, Used: sw.Used, UsedPercent: round2(sw.UsedPercent)}
	return nil
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }
