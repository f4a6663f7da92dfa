package e2e

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// TestThreatSiteOwnMachineToggleFlood (review 3, R4): a rogue site (its
// broker and secret held by an attacker) toggles ITS OWN registered
// machine with valid-looking connect and disconnect events as fast as it
// can. Before, every toggle became a presence event fanned out to every
// hub watcher (264,061 of them in ~4 s). Now a site's events pass a rate
// sized from its machines (one machine: 50 a second, 200 in a burst): a
// hub watcher receives at most that many presence events, the rest are
// dropped and counted (cc_site_events_dropped_total), a hub machine
// connecting during the flood still shows ONLINE, and the resync the
// drops scheduled leaves the site's machine as the site's brokers list
// it (ONLINE on one connection), with no periodic resync to help
// (ResyncInterval is an hour).
func TestThreatSiteOwnMachineToggleFlood(t *testing.T) {
	dir := t.TempDir()
	hub, _, leafPort, ls := startLeafHub(t, dir, leafSecret, "dc2")
	// The service's clock stands still: the site's bucket never refills,
	// so what a watcher may receive is its burst alone, whatever the
	// flood's duration (no wall-clock reading in the assertion).
	// (It starts at now: the brokers judge the credentials it issues by
	// their own clock.)
	frozen := time.Now()
	svc := stacktest.StartControlWith(t, controlsvc.Config{DataDir: dir, BrokerURL: hub.ClientURL(), Audit: controlsvc.AuditConfig{NotDurable: true},
		ResyncInterval: time.Hour, LeafSites: ls, Now: func() time.Time { return frozen }, Logger: stacktest.Logger().With("side", "control")})
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	const own = "10.6.0.1_dc2"
	if _, err := svc.Registry().SetMachineAt(own, pub, "dc2", nil, "test", false); err != nil {
		t.Fatal(err)
	}
	admin := newOperator(t, svc, "ops", "admin")
	nc, err := connectAs(hub.ClientURL(), stacktest.LoadKey(t, admin), "op")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var evs atomic.Int64
	if _, err := nc.Subscribe(fleet.PresenceEventsWildcard, func(*nats.Msg) { evs.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	rogue := startRogueSiteOwnSys(t, leafPort, "dc2", leafSecret)
	// What the site's brokers say when the hub resyncs the site: one
	// broker, NREAL, holding the machine on connection 7777777.
	var connz atomic.Int64
	if _, err := rogue.sys.Subscribe("$SYS.REQ.SERVER.PING", func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"server":{"id":"NREAL"},"data":{}}`))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := rogue.sys.Subscribe("$SYS.REQ.SERVER.NREAL.CONNZ", func(m *nats.Msg) {
		connz.Add(1)
		_ = m.Respond([]byte(`{"server":{"id":"NREAL"},"data":{"connections":[{"cid":7777777,"authorized_user":"agent:` + own + `"}]}}`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := rogue.sys.Flush(); err != nil {
		t.Fatal(err)
	}
	startSiteAgent(t, svc, hub.ClientURL(), "10.5.0.1_hq", "")
	stacktest.WaitFor(t, "hq ONLINE", 15*time.Second, func() bool { return stacktest.Online(svc, "10.5.0.1_hq") })

	const minPairs, maxPairs = 20_000, 400_000
	evs.Store(0)
	var sent atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= maxPairs; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ev := `{"server":{"id":"NREAL"},"client":{"id":` + strconv.Itoa(i) + `,"user":"agent:` + own + `","name":"` + own + `"}}`
			_ = rogue.sys.Publish("$SYS.ACCOUNT.FLEET.CONNECT", []byte(ev))
			_ = rogue.sys.Publish("$SYS.ACCOUNT.FLEET.DISCONNECT", []byte(ev))
			sent.Store(int64(i))
			if i%500 == 0 {
				_ = rogue.sys.Flush()
			}
		}
	}()
	stopped := false
	stopFlood := func() {
		if !stopped {
			stopped = true
			close(stop)
			<-done
		}
	}
	defer stopFlood()
	stacktest.WaitFor(t, "the flood under way", 15*time.Second, func() bool { return sent.Load() >= minPairs/4 })
	startSiteAgent(t, svc, hub.ClientURL(), "10.5.0.2_hq2", "")
	stacktest.WaitFor(t, "a hub machine ONLINE during the site's flood", 15*time.Second, func() bool { return stacktest.Online(svc, "10.5.0.2_hq2") })
	stacktest.WaitFor(t, "the flood's pairs sent", 15*time.Second, func() bool { return sent.Load() >= minPairs })
	stopFlood()
	pairs := sent.Load()

	// The drops scheduled a resync of the site: the site's brokers are
	// asked again after the flood, and the machine shows as they list it.
	asked := connz.Load()
	stacktest.WaitFor(t, "the site resynced after its events were dropped (its brokers asked again, the machine ONLINE on 1 connection)", 15*time.Second, func() bool {
		return connz.Load() > asked && connsOf(svc, own) == 1
	})
	got := evs.Load()
	// The site's burst (its clock stands still, so no refill), plus a
	// few for the hub machine's joined and the resync's own correction.
	const allowed = 200 + 10
	t.Logf("site sent %d connect/disconnect pairs; a hub watcher got %d presence events (allowed %d)", pairs, got, allowed)
	if got > allowed {
		t.Errorf("a hub watcher got %d presence events while a site toggled its one machine %d times; want at most %d (the site's burst of 200)",
			got, pairs, allowed)
	}
	web := httptest.NewServer(svc.HTTPHandler())
	defer web.Close()
	body := get(t, web.URL+"/metrics", http.StatusOK)
	line := strings.TrimSpace(grepPrefix(body, `cc_site_events_dropped_total{site="dc2"}`))
	if f := strings.Fields(line); len(f) != 2 || f[1] == "0" {
		t.Fatalf("cc_site_events_dropped_total for dc2: %q, want a count above 0", line)
	}
	if line := grepPrefix(body, `cc_site_resync_age_seconds{site="dc2"}`); line == "" {
		t.Fatal("no cc_site_resync_age_seconds for dc2 in /metrics")
	}
}

// connsOf is how many connections the control service holds ONLINE for
// machine id (0: offline).
func connsOf(svc *controlsvc.Service, id string) int {
	for _, s := range svc.Snapshot().Servers {
		if s.Machine == id {
			return s.Connections
		}
	}
	return 0
}
