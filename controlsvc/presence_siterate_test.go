package controlsvc

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// testClock is a clock tests move by hand; safe for the service's
// goroutines to read.
type testClock struct {
	mu sync.Mutex
	at time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at = c.at.Add(d)
}

// attr returns the value of log record r's attribute key ("" if none).
func attr(r slog.Record, key string) string {
	v := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
		}
		return true
	})
	return v
}

// siteService is a Service for site tests: machines registered to site
// dc2, the given leaf sites, the injected clock, logging to h.
func siteService(t *testing.T, clock *testClock, h slog.Handler, dc2Machines int, sites ...string) *Service {
	t.Helper()
	reg := registryWith(t, nil, nil)
	for i := range dc2Machines {
		_, pub := newUser(t)
		if _, err := reg.SetMachineAt("web"+strconv.Itoa(i), pub, "dc2", nil, "test", false); err != nil {
			t.Fatal(err)
		}
	}
	s := &Service{log: slog.New(h), reg: reg, cfg: Config{Now: clock.now}}
	for _, name := range sites {
		s.cfg.LeafSites = append(s.cfg.LeafSites, broker.LeafSite{Name: name})
	}
	s.presence = &presenceTracker{log: s.log, now: clock.now, reg: reg, leafSites: s.cfg.LeafSites}
	s.presence.state = newPresence(func(string) map[string]string { return nil }, (&recorder{}).emit)
	s.presence.state.now = clock.now
	return s
}

// TestSiteEventRate (review 3, R4): a site's events pass a token bucket
// sized from the machines registered to it (rate max(50, 2 per machine),
// burst max(200, 4 per machine)); the rest are dropped, counted, and
// logged once per siteWarnEvery naming the site and how long its presence
// has gone unconfirmed. Each site has its own bucket, refilled by the
// service's clock, and sized again from the registry every
// siteEventResize.
func TestSiteEventRate(t *testing.T) {
	clock := &testClock{at: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := &countingHandler{}
	s := siteService(t, clock, h, 1)
	s.presence.startWatchingSites()
	clock.add(90 * time.Second)
	// Scheduled resyncs find the service stopped: only the bucket is
	// under test here (TestSiteDropSchedulesOneResync runs them).
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	admitted := func(site string, n int) int {
		ok := 0
		for range n {
			if s.presence.admitSiteEvent(ctx, site) {
				ok++
			}
		}
		return ok
	}
	if got := admitted("dc2", 1000); got != 200 {
		t.Fatalf("1,000 events of a site with one machine at once: %d let through, want the burst, 200", got)
	}
	if got := s.presence.siteEventsDropped("dc2"); got != 800 {
		t.Fatalf("dropped %d, want 800", got)
	}
	lines := h.take()
	if len(lines) != 1 {
		t.Fatalf("%d log lines for 800 dropped events, want 1", len(lines))
	}
	if site, stale := attr(lines[0], "site"), attr(lines[0], "unconfirmed_for"); site != "dc2" || stale != "1m30s" {
		t.Fatalf("log line %q: site %q, unconfirmed_for %q; want dc2 and 1m30s", lines[0].Message, site, stale)
	}
	clock.add(time.Second)
	if got := admitted("dc2", 1000); got != 50 {
		t.Fatalf("a second later: %d let through, want the rate, 50", got)
	}
	if got := admitted("dc3", 300); got != 200 {
		t.Fatalf("another site: %d of 300 let through, want its own burst, 200", got)
	}
	if lines := h.take(); len(lines) != 1 || attr(lines[0], "site") != "dc3" {
		t.Fatalf("%d log lines after dc3's drops, want 1 naming dc3 (dc2's held back)", len(lines))
	}

	// 100 machines: 200 a second, 400 in a burst, once resized.
	for i := range 99 {
		_, pub := newUser(t)
		if _, err := s.reg.SetMachineAt("more"+strconv.Itoa(i), pub, "dc2", nil, "test", false); err != nil {
			t.Fatal(err)
		}
	}
	clock.add(siteEventResize)
	if got := admitted("dc2", 1000); got != 400 {
		t.Fatalf("after %v with 100 machines: %d let through, want the burst, 400", siteEventResize, got)
	}
	s.presence.siteResynced("dc2", clock.now())
	clock.add(siteWarnEvery)
	if got := admitted("dc2", 401); got != 400 {
		t.Fatalf("%d let through, want 400", got)
	}
	lines = h.take()
	if len(lines) != 1 || attr(lines[0], "last_good_resync_ago") != "10s" || attr(lines[0], "like_lines_held_back") == "" {
		t.Fatalf("after siteWarnEvery: %d lines, want 1 saying last_good_resync_ago 10s and the lines held back", len(lines))
	}
}

// TestSiteDropSchedulesOneResync (review 3, R4): the events a site's rate
// drops schedule one resync of the site, however many were dropped; it
// asks the site's brokers once and folds what they list (the machine
// whose events were dropped shows ONLINE), and records the site's last
// good resync. Drops after it schedule the next.
func TestSiteDropSchedulesOneResync(t *testing.T) {
	clock := &testClock{at: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := siteService(t, clock, slog.DiscardHandler, 1, "dc2")
	sys, peer := plainConn(t)
	s.presence.sys = sys
	var pings atomic.Int64
	if _, err := peer.Subscribe(fleet.SiteSysSubject("dc2", serverPingSubject), func(m *nats.Msg) {
		pings.Add(1)
		_ = m.Respond([]byte(`{"server":{"id":"NA"}}`))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Subscribe(fleet.SiteSysSubject("dc2", "$SYS.REQ.SERVER.NA.CONNZ"), func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"server":{"id":"NA"},"data":{"connections":[{"cid":5,"authorized_user":"agent:web0"}]}}`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := peer.Flush(); err != nil {
		t.Fatal(err)
	}
	s.presence.startWatchingSites()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resyncedAt := func() time.Time {
		s.presence.sites.mu.Lock()
		defer s.presence.sites.mu.Unlock()
		return s.presence.sites.site("dc2").lastResync
	}
	for range 1000 {
		s.presence.admitSiteEvent(ctx, "dc2")
	}
	waitFor(t, "the scheduled resync of dc2", 15*time.Second, func() bool { return !resyncedAt().IsZero() })
	if n := pings.Load(); n != 1 {
		t.Fatalf("800 dropped events: the site was pinged %d times, want 1", n)
	}
	if !s.presence.online("web0") {
		t.Fatal("web0, listed by the site's broker, not ONLINE after the site's resync")
	}
	if got := resyncedAt(); !got.Equal(clock.now()) {
		t.Fatalf("last good resync %v, want the snapshot's time %v", got, clock.now())
	}
	clock.add(time.Minute)
	if age, never, ok := s.presence.siteResyncAge("dc2"); !ok || never || age != time.Minute {
		t.Fatalf("resync age %v (never %v, ok %v), want 1m", age, never, ok)
	}
	// The bucket is still empty at this time: the next drop schedules
	// the next resync.
	clock.add(-time.Minute)
	s.presence.admitSiteEvent(ctx, "dc2")
	waitFor(t, "the second scheduled resync of dc2", 15*time.Second, func() bool { return pings.Load() == 2 })
}

// TestSiteResyncAgeMetric (review 3, R5): cc_site_resync_age_seconds
// says per site how long ago a resync last confirmed its machines
// (before the first, since the service began watching), by the service's
// clock; a site's resync that fails says it in its log line.
func TestSiteResyncAgeMetric(t *testing.T) {
	clock := &testClock{at: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := &countingHandler{}
	s := siteService(t, clock, h, 1, "dc2", "dc3")
	s.metrics = newMetrics(s)
	s.presence.startWatchingSites()
	age := func(site string) float64 {
		t.Helper()
		fams, err := s.metrics.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() != "cc_site_resync_age_seconds" {
				continue
			}
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "site" && l.GetValue() == site {
						return m.GetGauge().GetValue()
					}
				}
			}
		}
		t.Fatalf("no cc_site_resync_age_seconds for site %s", site)
		return 0
	}
	clock.add(30 * time.Second)
	if a := age("dc2"); a != 30 {
		t.Fatalf("dc2 never resynced, 30 s after the start: age %v, want 30", a)
	}
	s.presence.siteResynced("dc2", clock.now())
	clock.add(5 * time.Second)
	if a, b := age("dc2"), age("dc3"); a != 5 || b != 35 {
		t.Fatalf("ages dc2 %v, dc3 %v; want 5 and 35", a, b)
	}

	// A resync of dc2 out of time keeps its machines and says since when.
	sys, _ := plainConn(t)
	s.presence.sys = sys
	h.take()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.presence.resyncSite(ctx, "dc2", s.presence.state.generation(), clock.now())
	lines := h.take()
	if len(lines) != 1 || attr(lines[0], "site") != "dc2" || attr(lines[0], "last_good_resync_ago") != "5s" {
		t.Fatalf("%d lines, want 1 naming dc2 with last_good_resync_ago 5s", len(lines))
	}
	if a := age("dc2"); a != 5 {
		t.Fatalf("after a failed resync: age %v, want still 5", a)
	}
}

// TestSiteResyncBacksOff: resyncs scheduled for a site that keeps sending
// events over its rate back off (1 s, 2 s, 4 s … up to the periodic
// interval), and start again at 1 s after a quiet spell: a site cannot
// make the hub walk its presence every second.
func TestSiteResyncBacksOff(t *testing.T) {
	var st siteState
	now := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	var got []time.Duration
	for range 8 {
		d := st.siteResyncBackoff(now, time.Minute)
		got = append(got, d)
		now = now.Add(d)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}
	if !slices.Equal(got, want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
	now = now.Add(2 * time.Minute) // quiet
	if d := st.siteResyncBackoff(now, time.Minute); d != time.Second {
		t.Fatalf("after a quiet spell: %v, want 1s", d)
	}
}
