package agent

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/mem"
)

// DefaultFactsInterval is how often the agent reads its host's facts
// again; when they changed it reconnects to report them (refreshFacts).
const DefaultFactsInterval = 5 * time.Minute

// GatherFacts reads the facts of the host whose filesystem is at root
// ("" or "/": this one): what operators select machines by (fleet.Facts).
// A fact that cannot be read is left empty.
func GatherFacts(ctx context.Context, root string) *fleet.Facts {
	ctx = functions.PsutilContext(ctx, root)
	f := &fleet.Facts{OS: runtime.GOOS, Arch: runtime.GOARCH, AgentVersion: AgentVersion()}
	platform, _, version, _ := host.PlatformInformationWithContext(ctx)
	f.Platform, f.PlatformVersion = strings.ToLower(platform), version
	f.Kernel, _ = host.KernelVersionWithContext(ctx)
	f.Container = functions.DetectContainer(root)
	if system, role, err := host.VirtualizationWithContext(ctx); err == nil && role == "guest" && !containerSystem[system] && system != f.Container {
		f.Virtualization = system
	}
	if n, err := cpu.CountsWithContext(ctx, true); err == nil && n > 0 {
		f.CPUs = n
	} else {
		f.CPUs = runtime.NumCPU()
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		f.MemoryBytes = vm.Total
	}
	if bt, err := host.BootTimeWithContext(ctx); err == nil && bt > 0 {
		f.BootTime = time.Unix(int64(bt), 0).UTC()
	}
	return f
}

// containerSystem are the "virtualization" systems gopsutil reports that
// are container runtimes: the Container fact says those.
var containerSystem = map[string]bool{"docker": true, "lxc": true, "podman": true, "rkt": true, "containerd": true, "kubernetes": true, "systemd-nspawn": true}

// AgentVersion is what the agent reports as its version fact: Version,
// the module version and short commit of internal/version ("v1.2.3
// (c5ae30f1a2b3)").
func AgentVersion() string { return Version }

// factsCache shares one reading of each root's facts between the agents
// of one process (cc-swarm runs thousands, over a few roots) for
// factsCacheTTL.
var factsCache struct {
	mu    sync.Mutex
	roots map[string]cachedFacts
}

type cachedFacts struct {
	at time.Time
	f  *fleet.Facts
}

const factsCacheTTL = time.Minute

// readFacts is what the agent reports now: Config.Facts's answer, or the
// host's facts under Root (shared for factsCacheTTL).
func (a *Agent) readFacts(ctx context.Context) *fleet.Facts {
	if a.cfg.Facts != nil {
		return a.cfg.Facts(ctx)
	}
	factsCache.mu.Lock()
	defer factsCache.mu.Unlock()
	now := time.Now()
	c, ok := factsCache.roots[a.cfg.Root]
	if !ok || now.Sub(c.at) >= factsCacheTTL || now.Before(c.at) {
		if factsCache.roots == nil {
			factsCache.roots = map[string]cachedFacts{}
		}
		c = cachedFacts{at: now, f: GatherFacts(ctx, a.cfg.Root)}
		factsCache.roots[a.cfg.Root] = c
	}
	f := *c.f
	return &f
}

// Facts are the facts the agent reported on its connection (nil: none).
func (a *Agent) Facts() *fleet.Facts { return a.facts.Load() }

// sameFacts reports whether facts b need not be reported over a: equal,
// bar a boot time that moved less than a minute (some systems derive it
// from the uptime, and it wobbles).
func sameFacts(a, b *fleet.Facts) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := *a, *b
	if d := x.BootTime.Sub(y.BootTime); d > -time.Minute && d < time.Minute {
		y.BootTime = x.BootTime
	}
	return fleet.FactsEqual(&x, &y)
}

// keepBootTime gives f the boot time reported when f's only wobbled from
// it (see sameFacts): a refresh reports the boot time it started with, as
// the control service expects of one (controlsvc/presence.go,
// factsRefresh: another boot time from the same address is another host
// sharing the key, audited as a duplicate).
func keepBootTime(reported, f *fleet.Facts) {
	if reported == nil || f == nil {
		return
	}
	if d := f.BootTime.Sub(reported.BootTime); d > -time.Minute && d < time.Minute {
		f.BootTime = reported.BootTime
	}
}

// watchFacts reads the facts again every FactsInterval (or on each
// FactsTicks) until ctx ends, and reports them when they changed.
func (a *Agent) watchFacts(ctx context.Context) {
	ticks := a.cfg.FactsTicks
	if ticks == nil {
		if a.cfg.FactsInterval < 0 {
			return
		}
		t := time.NewTicker(a.cfg.FactsInterval)
		defer t.Stop()
		ticks = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
		f := a.readFacts(ctx)
		reported := a.facts.Load()
		if sameFacts(reported, f) {
			continue
		}
		keepBootTime(reported, f)
		if err := a.refreshFacts(ctx, f); err != nil {
			a.log.Warn("the host's facts changed, but reporting them failed; retrying at the next reading", "error", err)
		}
	}
}

// refreshFacts reports new facts: a connection's name is fixed while it
// lives, so the agent opens a new connection named with them, serves on
// it, and closes the old one. The control service sees a newer connection
// of the machine with other facts and publishes updated; the machine
// never goes OFFLINE. The old connection is retired first (it no longer
// reconnects on its own: closed by the control service for the new one,
// it must not come back with the old facts and close the new one).
func (a *Agent) refreshFacts(ctx context.Context, f *fleet.Facts) error {
	a.connMu.Lock()
	old, oldSvc, oldLink := a.nc, a.svc, a.link
	closed := a.closed
	a.connMu.Unlock()
	if closed || old == nil {
		return nil
	}
	if !old.IsConnected() {
		return errors.New("not connected; the new facts are reported once the agent is")
	}
	oldLink.retired.Store(true)
	link := newConnLink()
	nc, err := nats.Connect(a.cfg.URL, a.natsOptions(f, link)...)
	if err == nil {
		a.connMu.Lock()
		a.pending = nc // Close closes it too
		a.connMu.Unlock()
		err = a.waitConnected(ctx, nc, link)
		a.connMu.Lock()
		a.pending = nil
		a.connMu.Unlock()
	}
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		// Back to the old connection, which reconnects again if it was
		// closed meanwhile.
		oldLink.retired.Store(false)
		if !old.IsConnected() {
			_ = old.ForceReconnect()
		}
		return err
	}
	svc := oldSvc.movedTo(nc)
	err = a.serveOn(nc, svc)
	if err == nil {
		// The broker has the new subscriptions before the old ones go.
		err = nc.FlushTimeout(a.cfg.ConnectTimeout)
	}
	if err != nil {
		nc.Close()
		oldLink.retired.Store(false)
		if !old.IsConnected() {
			_ = old.ForceReconnect()
		}
		return err
	}
	a.connMu.Lock()
	if a.closed {
		a.connMu.Unlock()
		nc.Close()
		return nil
	}
	a.nc, a.svc, a.link = nc, svc, link
	a.facts.Store(f)
	a.connMu.Unlock()
	old.Close()
	a.log.Info("reported the host's new facts on a new connection", "facts", fleet.EncodeFactsName(a.id, f))
	return nil
}

// waitConnected waits until nc, dialled with link, is connected, for at
// most factsConnectWait.
func (a *Agent) waitConnected(ctx context.Context, nc *nats.Conn, link *connLink) error {
	if nc.IsConnected() {
		return nil
	}
	t := time.NewTimer(factsConnectWait(a.cfg.ConnectTimeout))
	defer t.Stop()
	select {
	case <-link.connected:
		return nil
	case <-link.closed:
		return errors.New("the new connection was closed")
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("the new connection did not connect within %s", factsConnectWait(a.cfg.ConnectTimeout))
	}
}

func factsConnectWait(connectTimeout time.Duration) time.Duration { return 3 * connectTimeout }
