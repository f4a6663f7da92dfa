package controlsvc

import (
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"
)

func TestFromHub(t *testing.T) {
	for _, tc := range []struct {
		name           string
		server         jwt.ServerID
		hubID, cluster string
		want           bool
	}{
		{"the hub broker itself, no cluster", jwt.ServerID{ID: "NHUB"}, "NHUB", "", true},
		{"a site broker, no clusters", jwt.ServerID{ID: "NSITE"}, "NHUB", "", false},
		{"a routed hub peer", jwt.ServerID{ID: "NPEER", Cluster: "commandcontrol"}, "NHUB", "commandcontrol", true},
		{"a site without a cluster, hub clustered", jwt.ServerID{ID: "NSITE"}, "NHUB", "commandcontrol", false},
		{"a clustered site", jwt.ServerID{ID: "NSITE", Cluster: "dc2"}, "NHUB", "commandcontrol", false},
		{"not connected: a site", jwt.ServerID{ID: "NHUB"}, "", "", false},
		{"an empty request: a site", jwt.ServerID{}, "NHUB", "", false},
	} {
		if got := fromHub(tc.server, tc.hubID, tc.cluster); got != tc.want {
			t.Errorf("%s: fromHub = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestSiteTTLHubAndSite runs the callout behind a routed hub of two
// brokers with a site's broker linked to the first as a leaf node, all
// real, with the callout's clock fixed. A machine connects at each: the
// JWT issued at the site expires SiteUserTTL after the clock, those at
// either hub broker (the one the service is connected to, and its route
// peer) the full UserTTL after it.
func TestSiteTTLHubAndSite(t *testing.T) {
	keys := brokertest.NewKeys(t)
	const secret = "site-secret-0123456789"
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	ports := freeLoopbackPorts(t, 2)
	start := func(cfg broker.Config) *broker.Broker {
		t.Helper()
		cfg.Listen, cfg.Auth = "127.0.0.1:0", keys.Auth()
		b, err := broker.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Shutdown)
		return b
	}
	const clusterSecret = "route-secret-0123456789abcdef"
	hubA := start(broker.Config{Name: "hub-a", ClusterListen: "127.0.0.1:" + strconv.Itoa(ports[0]), ClusterSecret: clusterSecret,
		LeafListen: "127.0.0.1:" + strconv.Itoa(ports[1]), LeafSites: []broker.LeafSite{{Name: "dc2", PasswordBcrypt: string(hash)}}})
	hubB := start(broker.Config{Name: "hub-b", ClusterListen: "127.0.0.1:0", ClusterSecret: clusterSecret, Routes: []string{hubA.ClusterURL()}})
	site := start(broker.Config{Name: "site-dc2",
		Hub: &broker.LeafHub{URLs: []string{"nats-leaf://127.0.0.1:" + strconv.Itoa(ports[1])}, Site: "dc2", Secret: secret}})
	waitFor(t, "the hub's route and the site's leaf link", 10*time.Second, func() bool {
		return hubA.Server().NumRoutes() > 0 && hubB.Server().NumRoutes() > 0 && site.Server().NumLeafNodes() == 3
	})

	c, agentKP := brokerCallout(t, keys)
	at := time.Now().Truncate(time.Second) // fixed; the brokers judge expiry by their own clock
	c.now = func() time.Time { return at }
	c.siteTTL = 5 * time.Minute
	var mu sync.Mutex
	expires := map[string]int64{}
	c.issued = func(req *jwt.AuthorizationRequestClaims, uc *jwt.UserClaims) {
		mu.Lock()
		defer mu.Unlock()
		expires[req.Server.Name] = uc.Expires
	}
	_, stop, err := c.subscribe(brokertest.Connect(t, hubB, keys.Control))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	pub, _ := agentKP.PublicKey()
	for _, b := range []*broker.Broker{hubB, hubA, site} {
		var nc *nats.Conn
		waitFor(t, "a machine admitted at "+b.Server().Name(), 10*time.Second, func() bool {
			nc, err = nats.Connect(b.ClientURL(), nats.Nkey(pub, agentKP.Sign), nats.Name("10.0.0.5_web01"),
				nats.Timeout(2*time.Second), nats.NoReconnect())
			return err == nil
		})
		nc.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	for name, want := range map[string]time.Time{"hub-b": at.Add(time.Hour), "hub-a": at.Add(time.Hour), "site-dc2": at.Add(5 * time.Minute)} {
		if got, ok := expires[name]; !ok || got != want.Unix() {
			t.Errorf("JWT issued at %s expires at %v, want %v", name, time.Unix(got, 0).UTC(), want.UTC())
		}
	}
}

// freeLoopbackPorts returns n ports free on 127.0.0.1 right now.
func freeLoopbackPorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// TestSiteUserTTLConfig: the site TTL defaults to DefaultSiteUserTTL and
// is never longer than the user TTL.
func TestSiteUserTTLConfig(t *testing.T) {
	for _, tc := range []struct {
		user, site, want time.Duration
	}{
		{0, 0, DefaultSiteUserTTL},
		{0, 30 * time.Second, 30 * time.Second},
		{time.Minute, 0, time.Minute},
		{10 * time.Minute, 2 * time.Hour, 10 * time.Minute},
	} {
		s, err := New(Config{DataDir: t.TempDir(), UserTTL: tc.user, SiteUserTTL: tc.site})
		if err != nil {
			t.Fatal(err)
		}
		if s.cfg.SiteUserTTL != tc.want {
			t.Errorf("UserTTL %v, SiteUserTTL %v: got %v, want %v", tc.user, tc.site, s.cfg.SiteUserTTL, tc.want)
		}
	}
}
