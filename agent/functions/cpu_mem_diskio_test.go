package functions

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// fixtureSample builds an ioSample from fixture files, at time at.
func fixtureSample(t *testing.T, stat, diskstats string, at time.Time) *ioSample {
	t.Helper()
	data, err := os.ReadFile(stat)
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseProcStat(data)
	if err != nil {
		t.Fatal(err)
	}
	disks, err := os.ReadFile(diskstats)
	if err != nil {
		t.Fatal(err)
	}
	return &ioSample{at: at, cpu: st, disks: parseDiskstats(disks)}
}

func TestParseDiskstatsIgnores(t *testing.T) {
	data, err := os.ReadFile(linuxRoot + "/proc/diskstats")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range parseDiskstats(data) {
		names = append(names, d.name)
	}
	if got, want := fmt.Sprint(names), "[sda nvme0n1 vda dm-0]"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	for name, ignored := range map[string]bool{
		"sda": false, "sda1": true, "sdab3": true, "nvme0n1": false, "nvme0n1p2": true, "xvda": false, "xvda1": true,
		"loop7": true, "ram0": true, "zram0": true, "fd0": true, "sr0": true, "dm-0": false, "mmcblk0": false, "mmcblk0p1": true, "md0": false,
	} {
		if got := ignoredDisks.MatchString(name); got != ignored {
			t.Errorf("%s: ignored %v, want %v", name, got, ignored)
		}
	}
}

func TestRatesFromFixtures(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	prev := fixtureSample(t, linuxRoot+"/proc/stat", linuxRoot+"/proc/diskstats", t0)
	cur := fixtureSample(t, linuxRoot+"/proc/stat.later", linuxRoot+"/proc/diskstats.later", t0.Add(10*time.Second))
	r := &CPUMemDiskIOReply{}
	fillRates(r, prev, cur)
	got := fmt.Sprintf("cpu=%v cores=%v interval=%v", *r.CPUPercent, r.CPUPerCore, r.SampleIntervalSeconds)
	if want := "cpu=32.97 cores=[33.33 32.61] interval=10"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	var disks []string
	for _, d := range r.Disks {
		disks = append(disks, fmt.Sprintf("%s r=%v/s %vB/s w=%v/s %vB/s util=%v%%", d.Name, d.ReadsPerSec, d.ReadBytesPerSec, d.WritesPerSec, d.WriteBytesPerSec, d.UtilPercent))
	}
	// vda's counters went backwards (reset) and dm-1 is new: both left out.
	want := "[sda r=10/s 524288B/s w=10/s 1.048576e+06B/s util=10% nvme0n1 r=0/s 0B/s w=0/s 0B/s util=0% dm-0 r=1/s 4096B/s w=1/s 4096B/s util=0.1%]"
	if got := fmt.Sprint(disks); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestCPUMemDiskIOWarmUpAndSampler(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc under Env.Root on Linux only")
	}
	now := fixtureTime
	set := New(&Env{Root: linuxRoot, Now: func() time.Time { return now }})
	fn, _ := set.Lookup("current-cpu-mem-diskio")
	f := fn.(*cpuMemDiskIO)
	// A first call whose deadline leaves too little time to measure
	// answers at once, warming up.
	f.until = func(time.Time) time.Duration { return minSampleGap }
	f.sleep = func(context.Context, time.Duration) error { t.Error("slept with no time to measure"); return nil }
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	res, err := set.Call(ctx, "current-cpu-mem-diskio", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*CPUMemDiskIOReply)
	if !r.WarmingUp || r.CPUPercent != nil {
		t.Errorf("first call: got warming_up %v cpu %v, want warming up without rates", r.WarmingUp, r.CPUPercent)
	}
	if got, want := fmt.Sprintf("%+v", r.Memory), "{Total:8192000000 Used:2048000000 Available:6144000000 UsedPercent:25}"; got != want {
		t.Errorf("memory: got %q, want %q", got, want)
	}
	// A second reading (what Run takes one second in) gives rates; one
	// taken too soon replaces the first. Env.Now stamps the readings.
	now = now.Add(minSampleGap - time.Millisecond)
	f.sample(context.Background())
	if f.prev != nil {
		t.Error("a reading right after the first one was kept as a second")
	}
	now = now.Add(time.Second)
	f.sample(context.Background())
	res, _ = set.Call(context.Background(), "current-cpu-mem-diskio", nil)
	if r := res.(*CPUMemDiskIOReply); r.WarmingUp || r.CPUPercent == nil || *r.CPUPercent != 0 || len(r.Disks) != 4 {
		t.Errorf("second call: got %+v, want rates (0%%, same fixture twice) for 4 disks", r)
	}
}

func TestCPUMemDiskIORun(t *testing.T) {
	f := &cpuMemDiskIO{root: linuxRoot, interval: 20 * time.Millisecond, warmup: time.Hour}
	var n atomic.Int32
	f.read = func(context.Context, string) (*ioSample, error) {
		n.Add(1)
		return &ioSample{at: time.Now()}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	f.Run(ctx) // returns when ctx ends
	if got := n.Load(); got != 1 {
		t.Errorf("warm-up not reached: got %d readings, want 1 (taken at start)", got)
	}

	// With a short warm-up the second reading follows it, then one per interval.
	f = &cpuMemDiskIO{root: linuxRoot, interval: minSampleGap, warmup: minSampleGap, read: f.read}
	n.Store(0)
	ctx, cancel = context.WithTimeout(context.Background(), 3*minSampleGap+minSampleGap/2)
	defer cancel()
	f.Run(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	if got := n.Load(); got < 3 || f.prev == nil || !f.cur.at.After(f.prev.at) {
		t.Errorf("got %d readings in 3.5 gaps, want at least 3 and the last two kept", got)
	}
}

// firstCallFixture is the function over the Linux fixture with a fake
// clock that the injected sleep advances, and the sleeps it was asked for.
func firstCallFixture(t *testing.T) (*cpuMemDiskIO, *[]time.Duration) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc under Env.Root on Linux only")
	}
	now := fixtureTime
	set := New(&Env{Root: linuxRoot, Now: func() time.Time { return now }})
	fn, _ := set.Lookup("current-cpu-mem-diskio")
	f := fn.(*cpuMemDiskIO)
	slept := &[]time.Duration{}
	f.sleep = func(ctx context.Context, d time.Duration) error {
		*slept = append(*slept, d)
		now = now.Add(d)
		return ctx.Err()
	}
	f.until = func(time.Time) time.Duration { t.Error("asked for time left with no deadline"); return 0 }
	return f, slept
}

func TestCPUMemDiskIOFirstCallMeasures(t *testing.T) {
	f, slept := firstCallFixture(t)
	res, err := f.Call(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*CPUMemDiskIOReply)
	if r.WarmingUp || r.CPUPercent == nil || len(r.Disks) != 4 || r.SampleIntervalSeconds != 1 {
		t.Errorf("first call: got %+v, want rates over 1s for 4 disks", r)
	}
	if got := fmt.Sprint(*slept); got != "[1s]" {
		t.Errorf("slept %s, want [1s]", got)
	}
	// The next call uses the two readings it has: no wait.
	if r := mustCall(t, f, context.Background()); r.WarmingUp || len(*slept) != 1 {
		t.Errorf("second call: warming up %v after sleeps %v, want rates without a sleep", r.WarmingUp, *slept)
	}
}

func TestCPUMemDiskIOFirstCallAfterBaseline(t *testing.T) {
	// The sampler took its first reading 700 ms ago: the call waits only
	// the rest of the window.
	f, slept := firstCallFixture(t)
	f.sample(context.Background())
	f.sleep(context.Background(), 700*time.Millisecond)
	*slept = nil
	if r := mustCall(t, f, context.Background()); r.WarmingUp || r.SampleIntervalSeconds != 1 {
		t.Errorf("got %+v, want rates over 1s", r)
	}
	if got := fmt.Sprint(*slept); got != "[300ms]" {
		t.Errorf("slept %s, want [300ms]", got)
	}
}

func TestCPUMemDiskIOFirstCallDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	// 1.2 s left: the call measures over 600 ms, half of it.
	f, slept := firstCallFixture(t)
	f.until = func(time.Time) time.Duration { return 1200 * time.Millisecond }
	if r := mustCall(t, f, ctx); r.WarmingUp || r.SampleIntervalSeconds != 0.6 {
		t.Errorf("got %+v, want rates over 0.6s", r)
	}
	if got := fmt.Sprint(*slept); got != "[600ms]" {
		t.Errorf("slept %s, want [600ms]", got)
	}
	// A context that ends during the wait: the answer comes at once,
	// warming up.
	f, _ = firstCallFixture(t)
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if r := mustCall(t, f, ctx); !r.WarmingUp || r.CPUPercent != nil {
		t.Errorf("cancelled: got %+v, want warming up", r)
	}
}

func mustCall(t *testing.T, f *cpuMemDiskIO, ctx context.Context) *CPUMemDiskIOReply {
	t.Helper()
	res, err := f.Call(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.(*CPUMemDiskIOReply)
}
