package cli

import (
	"context"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// factsFleet has agents reporting facts: web01 a Debian arm64 VM, web02
// Ubuntu in Docker, db01 Alpine, and old01, whose agent reports none.
// Each booted three days before the test.
func factsFleet(t *testing.T) *testFleet {
	f := startFleet(t)
	booted := time.Now().Add(-72 * time.Hour).UTC()
	start := func(id string, labels map[string]string, facts *fleet.Facts) {
		t.Helper()
		if facts != nil {
			facts.BootTime = booted
		}
		stacktest.RegisterMachine(t, f.svc, id, labels)
		a := stacktest.NewAgentWith(t, agent.Config{URL: f.url, MachineID: id, NoSamplers: true,
			Facts: func(context.Context) *fleet.Facts { return facts }})
		stacktest.RunAgent(t, f.svc, a)
	}
	web := map[string]string{"role": "web"}
	debian := stacktest.FixedFacts(context.Background())
	start("10.0.0.1_web01", web, debian)
	start("10.0.0.2_web02", web, &fleet.Facts{OS: "linux", Platform: "ubuntu", PlatformVersion: "24.04", Kernel: "6.8.0-31-generic",
		Arch: "amd64", CPUs: 8, MemoryBytes: 16 << 30, Container: "docker", AgentVersion: "0.1.0 (test)"})
	start("10.0.0.3_db01", map[string]string{"role": "db"}, &fleet.Facts{OS: "linux", Platform: "alpine", PlatformVersion: "3.20.1",
		Arch: "amd64", CPUs: 1, MemoryBytes: 512 << 20})
	start("10.0.0.4_old01", map[string]string{"role": "db"}, nil)
	return f
}

func TestServersFacts(t *testing.T) {
	f := factsFleet(t)
	stdout, stderr, code := cc(t, f.env(), "servers", "--facts")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	golden(t, "servers_facts", stdout)

	machines := func(where string) []string {
		t.Helper()
		stdout, stderr, code := cc(t, f.env(), "servers", "--json", "--where", where)
		if code != exitOK {
			t.Fatalf("--where %q: exit %d: %s", where, code, stderr)
		}
		var out []string
		for _, o := range jsonObjects(t, stdout) {
			out = append(out, o["machine"].(string))
		}
		return out
	}
	for _, tt := range []struct {
		where string
		want  []string
	}{
		{"os=linux", []string{"10.0.0.1_web01", "10.0.0.2_web02", "10.0.0.3_db01"}},
		{"os=linux,platform=debian,arch=arm64", []string{"10.0.0.1_web01"}},
		{"platform in (debian,ubuntu)", []string{"10.0.0.1_web01", "10.0.0.2_web02"}},
		{"platform not in (debian, ubuntu)", []string{"10.0.0.3_db01", "10.0.0.4_old01"}},
		{"platform != alpine,role=db", []string{"10.0.0.4_old01"}},
		{"container=docker or arch=arm64", []string{"10.0.0.1_web01", "10.0.0.2_web02"}},
		{"role=db,os=linux; virtualization=kvm", []string{"10.0.0.1_web01", "10.0.0.3_db01"}},
		{"cpus=8", []string{"10.0.0.2_web02"}},
		{"platform_version=3.*", []string{"10.0.0.3_db01"}},
	} {
		if got := machines(tt.where); !slices.Equal(got, tt.want) {
			t.Errorf("--where %q: %q, want %q", tt.where, got, tt.want)
		}
	}
	// The JSON carries the facts, without empty fields.
	stdout, _, _ = cc(t, f.env(), "servers", "--json", "--where", "machine=10.0.0.3_db01")
	if !strings.Contains(stdout, `"facts":{"os":"linux","platform":"alpine","platform_version":"3.20.1","arch":"amd64","cpus":1,"memory_bytes":536870912,"boot_time":`) || strings.Contains(stdout, "container") {
		t.Errorf("JSON of db01: %s", stdout)
	}
	if _, stderr, code := cc(t, f.env(), "servers", "--facts", "--all"); code != exitUsage || !strings.Contains(stderr, "choose one") {
		t.Errorf("--facts --all: exit %d, %s", code, stderr)
	}
	if _, stderr, code := cc(t, f.env(), "servers", "--where", "role in (web"); code != exitUsage || !strings.Contains(stderr, "end with one") {
		t.Errorf("bad list: exit %d, %s", code, stderr)
	}
}

// TestWatchShowsUpdated: an agent whose facts change reports them, and
// cc-bench watch shows the machine updated with its new facts; a watch
// selecting by a fact stops showing the machine once it no longer has it.
func TestWatchShowsUpdated(t *testing.T) {
	f := startFleet(t)
	const id = "10.0.0.1_web01"
	stacktest.RegisterMachine(t, f.svc, id, map[string]string{"role": "web"})
	var current atomic.Pointer[fleet.Facts]
	current.Store(stacktest.FixedFacts(context.Background()))
	ticks := make(chan time.Time)
	a := stacktest.NewAgentWith(t, agent.Config{URL: f.url, MachineID: id, NoSamplers: true, FactsTicks: ticks,
		Facts: func(context.Context) *fleet.Facts { c := *current.Load(); return &c }})
	stacktest.RunAgent(t, f.svc, a)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out := &stacktest.Buffer{}
	done := make(chan int)
	go func() {
		_, _, code := ccCtx(ctx, t, f.env(), out, "watch", "--where", "platform_version=12.*")
		done <- code
	}()
	waitFor(t, out, "-- 1 online")
	upgraded := *current.Load()
	upgraded.PlatformVersion = "13.0"
	current.Store(&upgraded)
	ticks <- time.Time{}
	waitFor(t, out, "updated  10.0.0.1_web01  role=web  debian 13.0 linux/arm64 kernel 6.1.0-18-arm64 2 CPUs 4GiB kvm agent 0.1.0 (test)")
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("exit %d after Ctrl-C", code)
	}
}

// TestServersRealHostFacts: an agent reporting the facts of the host the
// test runs on (agent.GatherFacts) is selected by its OS and
// architecture, and servers --facts shows them.
func TestServersRealHostFacts(t *testing.T) {
	f := startFleet(t)
	const id = "10.0.0.1_web01"
	stacktest.RegisterMachine(t, f.svc, id, nil)
	a := stacktest.NewAgentWith(t, agent.Config{URL: f.url, MachineID: id, NoSamplers: true,
		Facts: func(ctx context.Context) *fleet.Facts { return agent.GatherFacts(ctx, "") }})
	stacktest.RunAgent(t, f.svc, a)
	host := a.Facts()
	where := "os=" + runtime.GOOS + ",arch in (" + runtime.GOARCH + ",none)"
	stdout, stderr, code := cc(t, f.env(), "servers", "--facts", "--where", where)
	if code != exitOK || !strings.Contains(stdout, id) || !strings.Contains(stdout, runtime.GOARCH) ||
		!strings.Contains(stdout, strconv.Itoa(host.CPUs)) || !strings.Contains(stdout, "HOST UPTIME") {
		t.Fatalf("servers --facts --where %q: exit %d\n%s%s", where, code, stdout, stderr)
	}
	if host.Platform != "" && !strings.Contains(stdout, host.Platform) {
		t.Errorf("the platform %q is not shown:\n%s", host.Platform, stdout)
	}
	stdout, _, _ = cc(t, f.env(), "servers", "--json", "--where", "os!="+runtime.GOOS)
	if strings.TrimSpace(stdout) != "" {
		t.Errorf("os!=%s selected: %s", runtime.GOOS, stdout)
	}
}
