package e2e

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Security review round 2, findings 2 and 3: a compromised site (whoever
// holds its broker and secret) must cost the hub's control service a
// bounded amount of work and memory, and must not hold up the hub's own
// presence. The rogue site here is a plain nats-server linked with the
// site's real secret whose system account is an ordinary account, so the
// attacker's client alone answers what the hub asks the site.

// startRogueSiteOwnSys is startRogueSite whose SYS account is an ordinary
// account: only the attacker's client (r.sys) answers the hub's requests
// to the site, and what it publishes there reaches the hub as the site's
// events.
func startRogueSiteOwnSys(t *testing.T, leafPort int, site, secret string) *rogueSite {
	t.Helper()
	return startRogueSiteWith(t, leafPort, site, secret, "RSYS")
}

// rogueAnswers makes the rogue site answer the hub's server PING with a
// made-up broker and every CONNZ page with a full page of 5,000 made-up
// connections (fresh ids each time): paged naively, that never ends. It
// returns the counts of pings and pages answered.
func rogueAnswers(t *testing.T, r *rogueSite) (pings, pages *atomic.Int64) {
	t.Helper()
	pings, pages = &atomic.Int64{}, &atomic.Int64{}
	var cid atomic.Uint64
	if _, err := r.sys.Subscribe("$SYS.REQ.SERVER.PING", func(m *nats.Msg) {
		pings.Add(1)
		_ = m.Respond([]byte(`{"server":{"id":"NFAKE"},"data":{}}`))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.sys.Subscribe("$SYS.REQ.SERVER.*.CONNZ", func(m *nats.Msg) {
		pages.Add(1)
		var b strings.Builder
		b.WriteString(`{"server":{"id":"NFAKE"},"data":{"connections":[`)
		for i := range 5000 {
			if i > 0 {
				b.WriteByte(',')
			}
			n := strconv.FormatUint(cid.Add(1), 10)
			b.WriteString(`{"cid":` + n + `,"authorized_user":"agent:10.9.9.9_` + n + `"}`)
		}
		b.WriteString(`]}}`)
		_ = m.Respond([]byte(b.String()))
	}); err != nil {
		t.Fatal(err)
	}
	if err := r.sys.Flush(); err != nil {
		t.Fatal(err)
	}
	return pings, pages
}

// hubHasUser reports whether the hub's broker has a connection of user.
func hubHasUser(t *testing.T, hub *broker.Broker, user string) bool {
	t.Helper()
	cz, err := hub.Server().Connz(&server.ConnzOptions{Username: true, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cz.Conns {
		if c.AuthorizedUser == user {
			return true
		}
	}
	return false
}

// TestThreatSiteCannotStallResync (review 2, F2): a rogue site answers the
// hub's ping with a broker of its own and that broker's CONNZ with full
// pages forever. The hub's presence resync still completes: a hub
// machine that left while its disconnect event was lost (the control
// service's connections were stalled, then cut) is dropped by it. And
// each resync takes at most one page from the site (its bound: two
// connections per machine registered there plus a slack, here under one
// page), so what the control service holds of the site stays bounded;
// none of its made-up machines shows ONLINE.
func TestThreatSiteCannotStallResync(t *testing.T) {
	dir := t.TempDir()
	hub, _, leafPort, ls := startLeafHub(t, dir, leafSecret, "dc2")
	// The control service reaches the hub through a proxy, so its
	// connections can be stalled and cut (losing the events in flight).
	proxy := stacktest.StartProxy(t, hub.ClientURL())
	svc := controlBehindSites(t, dir, proxy.URL(), 500*time.Millisecond, ls)
	rogue := startRogueSiteOwnSys(t, leafPort, "dc2", leafSecret)
	pings, pages := rogueAnswers(t, rogue)

	const hq = "10.5.0.1_hq"
	a := startSiteAgent(t, svc, hub.ClientURL(), hq, "")
	stacktest.WaitFor(t, hq+" ONLINE", 15*time.Second, func() bool { return stacktest.Online(svc, hq) })
	// bounded checks, while waiting, that the site never got more than a
	// page per resync asked of it (a page needs its ping first).
	bounded := func() {
		p := pages.Load()
		if n := pings.Load(); p > n {
			t.Fatalf("the rogue site served %d CONNZ pages for %d pings: the control service pages a site without bound", p, n)
		}
	}

	proxy.Pause()
	a.Close()
	stacktest.WaitFor(t, hq+"'s connection closed at the hub", 10*time.Second, func() bool {
		bounded()
		return !hubHasUser(t, hub, "agent:"+hq)
	})
	proxy.Cut() // its disconnect event, stalled on the way, is lost
	proxy.Resume()
	if !stacktest.Online(svc, hq) {
		t.Fatal("the disconnect event was not lost: the test does not test the resync")
	}
	stacktest.WaitFor(t, "a resync to drop "+hq+" (left while its event was lost)", 30*time.Second, func() bool {
		bounded()
		return !stacktest.Online(svc, hq)
	})
	// Resyncs go on, each bounded.
	after := pings.Load()
	stacktest.WaitFor(t, "two more resyncs", 20*time.Second, func() bool {
		bounded()
		return pings.Load() >= after+2
	})
	bounded()
	if n := svc.OnlineCount(); n != 0 {
		t.Fatalf("%d machines ONLINE, want none (the site's made-up connections are not believed): %+v", n, svc.Snapshot().Servers)
	}
	t.Logf("pings %d, pages %d", pings.Load(), pages.Load())
}

// TestThreatSiteDoesNotBlockStart (review 2, F2): with the rogue site
// linked and paging its CONNZ forever, a restarted control service still
// starts: Start returns, the hub's machine is ONLINE (the hub's part of
// the initial resync is done), and the control API answers.
func TestThreatSiteDoesNotBlockStart(t *testing.T) {
	dir := t.TempDir()
	hub, _, leafPort, ls := startLeafHub(t, dir, leafSecret, "dc2")
	first := controlBehindSites(t, dir, hub.ClientURL(), time.Hour, ls)
	adminSeed := newOperator(t, first, "ops", "admin")
	const hq = "10.5.0.1_hq"
	startSiteAgent(t, first, hub.ClientURL(), hq, "")
	stacktest.WaitFor(t, hq+" ONLINE", 15*time.Second, func() bool { return stacktest.Online(first, hq) })
	rogue := startRogueSiteOwnSys(t, leafPort, "dc2", leafSecret)
	_, pages := rogueAnswers(t, rogue)
	first.Close()

	svc, err := controlsvc.New(controlsvc.Config{DataDir: dir, BrokerURL: hub.ClientURL(), Audit: controlsvc.AuditConfig{NotDurable: true},
		ResyncInterval: time.Hour, LeafSites: ls, Logger: stacktest.Logger().With("side", "control")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Start(ctx) }()
	t.Cleanup(func() {
		// On the old code Start never returns on its own: cut the rogue
		// site off so it does.
		cancel()
		rogue.srv.Shutdown()
		<-done
		svc.Close()
	})
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("Start: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("Start has not returned after 15s with a rogue site linked (it served %d CONNZ pages)", pages.Load())
	}
	if !stacktest.Online(svc, hq) {
		t.Fatalf("%s is not ONLINE after Start: the hub's part of the initial resync is not done", hq)
	}
	admin, err := bench.Connect(hub.ClientURL(), bench.WithSeedFile(adminSeed))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	actx, acancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer acancel()
	ms, err := admin.Machines(actx)
	if err != nil {
		t.Fatalf("control API with the rogue site linked: %v", err)
	}
	if len(ms) != 1 || ms[0].ID != hq {
		t.Fatalf("machines: %+v, want %s", ms, hq)
	}
}

// TestThreatSiteEventFlood (review 2, F3): the rogue site floods forged
// connect events for machines that are not its own, and never answers
// the KICKs they provoke. The control service's goroutines stay bounded
// (no goroutine per forged claim: they are closed through the site's
// bounded queue), and the hub's own events are not queued behind the
// site's: a hub agent started during the flood shows ONLINE.
func TestThreatSiteEventFlood(t *testing.T) {
	dir := t.TempDir()
	hub, _, leafPort, ls := startLeafHub(t, dir, leafSecret, "dc2")
	svc := controlBehindSites(t, dir, hub.ClientURL(), time.Hour, ls)
	rogue := startRogueSiteOwnSys(t, leafPort, "dc2", leafSecret)
	var kicks atomic.Int64
	// KICKs reach the site and are never answered: each waits out its
	// timeout.
	if _, err := rogue.sys.Subscribe("$SYS.REQ.SERVER.*.KICK", func(*nats.Msg) { kicks.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := rogue.sys.Flush(); err != nil {
		t.Fatal(err)
	}
	startSiteAgent(t, svc, hub.ClientURL(), "10.5.0.1_hq", "")
	stacktest.WaitFor(t, "10.5.0.1_hq ONLINE", 15*time.Second, func() bool { return stacktest.Online(svc, "10.5.0.1_hq") })
	base := runtime.NumGoroutine()

	peak := base
	sample := func() {
		if n := runtime.NumGoroutine(); n > peak {
			peak = n
		}
	}
	const forged = 30000
	for i := range forged {
		ev := `{"server":{"id":"NFAKE"},"client":{"id":` + strconv.Itoa(i+1) + `,"user":"agent:ghost-` + strconv.Itoa(i) + `","name":"g"}}`
		if err := rogue.sys.Publish("$SYS.ACCOUNT.FLEET.CONNECT", []byte(ev)); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 {
			if err := rogue.sys.Flush(); err != nil {
				t.Fatal(err)
			}
			sample()
		}
	}
	const hq2 = "10.5.0.2_hq2"
	startSiteAgent(t, svc, hub.ClientURL(), hq2, "")
	// Until the hub's agent is ONLINE and the site's queue has worked
	// through a couple of its (unanswered, 2 s each) KICKs.
	stacktest.WaitFor(t, hq2+" ONLINE during the flood of forged events", 15*time.Second, func() bool {
		sample()
		return stacktest.Online(svc, hq2)
	})
	stacktest.WaitFor(t, "the forged claims' KICKs reaching the site", 15*time.Second, func() bool {
		sample()
		return kicks.Load() >= 2
	})
	sample()
	t.Logf("goroutines: %d before the flood, %d at most during it; KICKs at the site %d", base, peak, kicks.Load())
	if peak > base+200 {
		t.Fatalf("goroutines: %d before a flood of %d forged claims, %d during it: the forged claims cost a goroutine each", base, forged, peak)
	}
	if n := svc.OnlineCount(); n != 2 {
		t.Fatalf("%d machines ONLINE, want the hub's 2 (no forged one): %+v", n, svc.Snapshot().Servers)
	}
}
