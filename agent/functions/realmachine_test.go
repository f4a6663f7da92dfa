package functions

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// TestRealMachine calls every built-in once against this machine (Root "/")
// and checks the answers are sane. A function skips only where its source
// does not exist here (no dpkg, no apt security index, not Linux).
func TestRealMachine(t *testing.T) {
	if testing.Short() {
		t.Skip("reads the real machine")
	}
	set := New(&Env{Root: "/", MachineID: "10.0.0.5_real", Version: "test"})
	call := func(t *testing.T, name string) any {
		t.Helper()
		res, err := set.Call(context.Background(), name, nil)
		if fleet.CodeOf(err) == fleet.CodeUnavailable && err != nil {
			t.Skipf("source absent here: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := json.Marshal(res); err != nil {
			t.Fatalf("reply does not encode: %v", err)
		}
		return res
	}
	t.Run("machine-info", func(t *testing.T) {
		r := call(t, "machine-info").(*MachineInfoReply)
		if r.Hostname == "" || r.OS != runtime.GOOS || r.CPU.Logical < 1 || r.MemoryTotalBytes == 0 ||
			r.MachineID != "10.0.0.5_real" || len(r.Interfaces) == 0 {
			t.Errorf("implausible: %+v", r)
		}
		if runtime.GOOS == "linux" && (r.KernelVersion == "" || r.BootTime.IsZero() || r.UptimeSeconds == 0) {
			t.Errorf("no kernel, boot time or uptime: %+v", r)
		}
	})
	t.Run("sw-list", func(t *testing.T) {
		r := call(t, "sw-list").(*SwListReply)
		if r.Count == 0 || r.Count != len(r.Packages) || r.Packages[0].Name == "" || r.Packages[0].Version == "" {
			t.Errorf("implausible: manager %q, %d packages", r.Manager, r.Count)
		}
		if r.Manager == "dpkg" && r.Packages[0].InstallTime.IsZero() {
			t.Errorf("%s: no install time from var/lib/dpkg/info", r.Packages[0].Name)
		}
	})
	t.Run("installed-sec-patches", func(t *testing.T) {
		r := call(t, "installed-sec-patches").(*SecPatchesReply)
		if len(r.SecurityIndex) == 0 || r.Pending == nil || r.PendingCount+r.InstalledCount == 0 {
			t.Errorf("implausible: %d indexes, %d pending, %d installed", len(r.SecurityIndex), r.PendingCount, r.InstalledCount)
		}
	})
	t.Run("current-load", func(t *testing.T) {
		r := call(t, "current-load").(*LoadReply)
		if r.Load1 < 0 || r.Load5 < 0 || r.Load15 < 0 || r.CPUs < 1 {
			t.Errorf("implausible: %+v", r)
		}
		if _, err := os.Stat("/proc/pressure/cpu"); err == nil && r.Pressure["cpu"] == nil {
			t.Error("/proc/pressure exists but no cpu pressure in the reply")
		}
	})
	t.Run("current-cpu-mem-diskio", func(t *testing.T) {
		fn, _ := set.Lookup("current-cpu-mem-diskio")
		f := fn.(*cpuMemDiskIO)
		f.warmup = 300 * time.Millisecond
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go f.Run(ctx)
		deadline := time.Now().Add(5 * time.Second)
		for {
			r := call(t, "current-cpu-mem-diskio").(*CPUMemDiskIOReply)
			if !r.WarmingUp {
				if *r.CPUPercent < 0 || *r.CPUPercent > 100 || len(r.CPUPerCore) != runtime.NumCPU() ||
					r.Memory.Total == 0 || r.SampleIntervalSeconds <= 0 {
					t.Errorf("implausible: %+v", r)
				}
				if runtime.GOOS == "linux" && hasBlockDevices() && len(r.Disks) == 0 {
					t.Error("no disks although /sys/block has some")
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("still warming up after 5s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// hasBlockDevices reports whether /sys/block lists a device the sampler
// keeps.
func hasBlockDevices() bool {
	entries, err := os.ReadDir("/sys/block")
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	for _, e := range entries {
		if !ignoredDisks.MatchString(filepath.Base(e.Name())) {
			return true
		}
	}
	return false
}
