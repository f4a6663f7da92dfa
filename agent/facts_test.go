package agent_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
)

// TestGatherFactsThisHost: the facts of the machine the test runs on
// name its OS and architecture, its CPUs and memory, and this agent.
func TestGatherFactsThisHost(t *testing.T) {
	f := agent.GatherFacts(t.Context(), "")
	if f.OS != runtime.GOOS || f.Arch != runtime.GOARCH {
		t.Errorf("os/arch %s/%s, want %s/%s", f.OS, f.Arch, runtime.GOOS, runtime.GOARCH)
	}
	if f.CPUs <= 0 || f.MemoryBytes == 0 {
		t.Errorf("cpus %d, memory %d: want both", f.CPUs, f.MemoryBytes)
	}
	if !strings.HasPrefix(f.AgentVersion, agent.Version) {
		t.Errorf("agent version %q, want it to start with %q", f.AgentVersion, agent.Version)
	}
	if runtime.GOOS == "linux" && (f.Kernel == "" || f.BootTime.IsZero()) {
		t.Errorf("kernel %q, boot time %v: want both on linux", f.Kernel, f.BootTime)
	}
	if name := fleet.EncodeFactsName("10.0.0.5_web01", f); len(name) > fleet.MaxFactsName {
		t.Errorf("this host's facts make a %d-byte name", len(name))
	}
}

// TestGatherFactsUnderRoot: the platform comes from the root's
// os-release and the container runtime from its marks.
func TestGatherFactsUnderRoot(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("os-release is read on linux")
	}
	root := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\nNAME=\"Debian GNU/Linux\"\n")
	write(".dockerenv", "")
	f := agent.GatherFacts(t.Context(), root)
	if f.Platform != "debian" || f.PlatformVersion != "12" || f.Container != "docker" {
		t.Errorf("platform %q %q, container %q; want debian 12 in docker", f.Platform, f.PlatformVersion, f.Container)
	}
	if f.Virtualization == "docker" {
		t.Error("a container runtime is reported as virtualization")
	}
}

// TestFactsReportedAndRefreshed: the agent's facts reach the control
// service with its join (the joined event and the snapshot); when they
// change, the agent reports them on a new connection: watchers get an
// updated event, never a left, and the machine keeps answering.
func TestFactsReportedAndRefreshed(t *testing.T) {
	svc := stacktest.StartControl(t)
	nc := stacktest.Connect(t, svc.ClientURL(), stacktest.LoadKey(t, svc.AdminKeyPath()), "watcher")
	events := make(chan fleet.PresenceEvent, 16)
	if _, err := nc.Subscribe(fleet.PresenceEventsWildcard, func(m *nats.Msg) {
		var ev fleet.PresenceEvent
		if json.Unmarshal(m.Data, &ev) == nil {
			events <- ev
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	var current atomic.Pointer[fleet.Facts]
	current.Store(&fleet.Facts{OS: "linux", Platform: "debian", PlatformVersion: "12.5", Arch: "arm64", CPUs: 2})
	ticks := make(chan time.Time)
	a := runAgent(t, svc, "10.0.0.5_web01", agent.Config{
		Facts:      func(context.Context) *fleet.Facts { f := *current.Load(); return &f },
		FactsTicks: ticks,
	}, stacktest.Result("ping", "pong"))

	next := func(want string) fleet.PresenceEvent {
		t.Helper()
		select {
		case ev := <-events:
			if ev.Event != want || ev.Machine != a.MachineID() {
				t.Fatalf("event %s %s, want %s %s", ev.Event, ev.Machine, want, a.MachineID())
			}
			return ev
		case <-time.After(stacktest.WaitTimeout):
			t.Fatalf("no %s event", want)
		}
		return fleet.PresenceEvent{}
	}
	ev := next(fleet.EventJoined)
	if !fleet.FactsEqual(ev.Facts, current.Load()) {
		t.Fatalf("joined with facts %+v, want %+v", ev.Facts, current.Load())
	}
	if s := svc.Snapshot(); len(s.Servers) != 1 || !fleet.FactsEqual(s.Servers[0].Facts, current.Load()) {
		t.Fatalf("snapshot %+v", s.Servers)
	}

	// The same facts again: nothing happens (the tick is taken, and
	// the next one waits for it).
	ticks <- time.Time{}
	old := a.Conn()
	upgraded := *current.Load()
	upgraded.PlatformVersion = "13.0"
	current.Store(&upgraded)
	ticks <- time.Time{}
	ev = next(fleet.EventUpdated)
	if !fleet.FactsEqual(ev.Facts, &upgraded) {
		t.Fatalf("updated with facts %+v, want %+v", ev.Facts, upgraded)
	}
	stacktest.WaitFor(t, "the old connection closed", stacktest.WaitTimeout, old.IsClosed)
	if a.Conn() == old || !fleet.FactsEqual(a.Facts(), &upgraded) {
		t.Fatal("the agent did not move to a connection with its new facts")
	}
	if s := svc.Snapshot(); len(s.Servers) != 1 || s.Servers[0].Facts.PlatformVersion != "13.0" {
		t.Fatalf("snapshot after the update %+v", s.Servers)
	}
	if _, err := stacktest.Request(nc, a.MachineID(), "ping", nil, stacktest.WaitTimeout); err != nil {
		t.Fatalf("call after the update: %v", err)
	}
	select {
	case ev := <-events:
		t.Fatalf("unexpected event %s %s (%s)", ev.Event, ev.Machine, ev.Reason)
	default:
	}
}

// TestFactsOnlyForItself: a machine's key connecting with a name that
// claims another machine's id and facts is refused (the callout reads the
// id from the name and checks the key on record), so it cannot describe
// another machine; the other machine's facts stay its own agent's.
func TestFactsOnlyForItself(t *testing.T) {
	svc := stacktest.StartControl(t)
	web01 := runAgent(t, svc, "10.0.0.5_web01", agent.Config{Facts: func(context.Context) *fleet.Facts { return &fleet.Facts{OS: "linux"} }})
	stacktest.RegisterMachine(t, svc, "10.0.0.6_web02", nil)
	forged := fleet.EncodeFactsName(web01.MachineID(), &fleet.Facts{OS: "windows", Platform: "windows"})
	if nc, err := stacktest.Dial(svc.ClientURL(), stacktest.MachineKey(t, "10.0.0.6_web02"), forged); err == nil {
		nc.Close()
		t.Fatal("web02's key connected naming web01")
	}
	for _, s := range svc.Snapshot().Servers {
		if s.Machine == web01.MachineID() && (s.Facts == nil || s.Facts.OS != "linux") {
			t.Fatalf("web01's facts: %+v", s.Facts)
		}
		if s.Machine == "10.0.0.6_web02" {
			t.Fatal("web02 is ONLINE through a connection named as web01")
		}
	}
}

// TestFactsRefreshKeepsBootTime: a refresh reports the boot time the agent
// started with when the new reading only wobbled from it (less than a
// minute): the control service takes a newer connection from the same
// address with another boot time for another host sharing the key, and
// audits it as a duplicate (controlsvc TestFactsRefreshNeedsSameBootTime).
func TestFactsRefreshKeepsBootTime(t *testing.T) {
	svc := stacktest.StartControl(t)
	nc := stacktest.Connect(t, svc.ClientURL(), stacktest.LoadKey(t, svc.AdminKeyPath()), "watcher")
	events := make(chan fleet.PresenceEvent, 16)
	if _, err := nc.Subscribe(fleet.PresenceEventsWildcard, func(m *nats.Msg) {
		var ev fleet.PresenceEvent
		if json.Unmarshal(m.Data, &ev) == nil {
			events <- ev
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	booted := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	var current atomic.Pointer[fleet.Facts]
	current.Store(&fleet.Facts{OS: "linux", PlatformVersion: "12.5", BootTime: booted})
	ticks := make(chan time.Time)
	a := runAgent(t, svc, "10.0.0.6_web02", agent.Config{
		Facts:      func(context.Context) *fleet.Facts { f := *current.Load(); return &f },
		FactsTicks: ticks,
	})
	next := func(want string) fleet.PresenceEvent {
		t.Helper()
		select {
		case ev := <-events:
			if ev.Event != want || ev.Machine != a.MachineID() {
				t.Fatalf("event %s %s, want %s %s", ev.Event, ev.Machine, want, a.MachineID())
			}
			return ev
		case <-time.After(stacktest.WaitTimeout):
			t.Fatalf("no %s event", want)
		}
		return fleet.PresenceEvent{}
	}
	next(fleet.EventJoined)
	old := a.Conn()
	upgraded := fleet.Facts{OS: "linux", PlatformVersion: "13.0", BootTime: booted.Add(20 * time.Second)}
	current.Store(&upgraded)
	ticks <- time.Time{}
	ev := next(fleet.EventUpdated)
	if ev.Facts == nil || ev.Facts.PlatformVersion != "13.0" || !ev.Facts.BootTime.Equal(booted) {
		t.Fatalf("updated with facts %+v, want platform_version 13.0 and boot time %s", ev.Facts, booted)
	}
	stacktest.WaitFor(t, "the old connection closed", stacktest.WaitTimeout, old.IsClosed)
	if f := a.Facts(); f == nil || !f.BootTime.Equal(booted) {
		t.Fatalf("the agent holds facts %+v, want boot time %s", f, booted)
	}
}
