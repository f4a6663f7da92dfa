package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// leafSecret is the secret the test sites share.
const leafSecret = "site-secret-0123456789"

// startLeafSites starts a hub broker that accepts the given sites on a
// leaf listener, and one site broker per site linked to it with secret.
// The links are authorised by the control service's callout: start it
// with the returned leaf sites (controlBehindSites), then waitLinked.
func startLeafSites(t *testing.T, dataDir string, secret string, sites ...string) (*broker.Broker, []*broker.Broker, []broker.LeafSite) {
	t.Helper()
	hub, auth, leafPort, ls := startLeafHub(t, dataDir, secret, sites...)
	var out []*broker.Broker
	for _, s := range sites {
		out = append(out, startSiteBroker(t, auth, leafPort, s, secret, "site-"+s))
	}
	return hub, out, ls
}

// startLeafHub starts a hub broker (with JetStream, for the audit) that
// accepts sites on a leaf listener; it returns the hub, the brokers' auth
// keys, the leaf port and the leaf sites for the control service.
func startLeafHub(t *testing.T, dataDir string, secret string, sites ...string) (*broker.Broker, broker.AuthKeys, int, []broker.LeafSite) {
	t.Helper()
	auth := stacktest.BrokerAuth(t, dataDir)
	// The entries cc-broker leaf-site writes: the secret's SHA-256.
	sum := sha256.Sum256([]byte(secret))
	var ls []broker.LeafSite
	for _, s := range sites {
		ls = append(ls, broker.LeafSite{Name: s, SecretSHA256: hex.EncodeToString(sum[:])})
	}
	leafPort := freePorts(t, 1)[0]
	hub := brokertest.StartWith(t, broker.Config{Listen: "127.0.0.1:0", Name: "hub", Auth: auth, PingInterval: time.Second, MaxPingsOut: stacktest.MaxPingsOut,
		LeafListen: "127.0.0.1:" + itoa(leafPort), LeafSites: ls, StoreDir: t.TempDir(), Logger: stacktest.Logger().With("broker", "hub")})
	return hub, auth, leafPort, ls
}

// startSiteBroker starts a broker for site linked to the hub's leaf port.
func startSiteBroker(t *testing.T, auth broker.AuthKeys, leafPort int, site, secret, name string) *broker.Broker {
	t.Helper()
	return startSiteBrokerAt(t, auth, "nats-leaf://127.0.0.1:"+itoa(leafPort), site, secret, name)
}

// startSiteBrokerAt starts a broker for site linked to the hub at hubURL.
func startSiteBrokerAt(t *testing.T, auth broker.AuthKeys, hubURL, site, secret, name string) *broker.Broker {
	t.Helper()
	b := brokertest.StartWith(t, broker.Config{Listen: "127.0.0.1:0", Name: name, Auth: auth, PingInterval: time.Second, MaxPingsOut: stacktest.MaxPingsOut,
		Hub:    &broker.LeafHub{URLs: []string{hubURL}, Site: site, Secret: secret},
		Logger: stacktest.Logger().With("broker", name)})
	return b
}

// waitLinked waits for a site broker's three leaf links to be up.
func waitLinked(t *testing.T, b *broker.Broker) {
	t.Helper()
	stacktest.WaitFor(t, b.Server().Name()+" linked to the hub for all three accounts", 15*time.Second, func() bool {
		return b.Server().NumLeafNodes() == 3
	})
}

// controlBehindSites is controlBehind for a hub that accepts sites.
func controlBehindSites(t *testing.T, dataDir, url string, resync time.Duration, sites []broker.LeafSite) *controlsvc.Service {
	t.Helper()
	return stacktest.StartControlWith(t, controlsvc.Config{DataDir: dataDir, BrokerURL: url, Audit: controlsvc.AuditConfig{NotDurable: true},
		ResyncInterval: resync, LeafSites: sites, Logger: stacktest.Logger().With("side", "control")})
}

// startSiteAgent starts a real agent for machine id at site's broker url,
// registered to site first (site "" registers it to the hub).
func startSiteAgent(t *testing.T, svc *controlsvc.Service, url, id, site string, opts ...nats.Option) *agent.Agent {
	t.Helper()
	kp := stacktest.NewKey(t)
	if _, err := svc.Registry().SetMachineAt(id, stacktest.Pub(t, kp), site, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	a := stacktest.NewAgentWith(t, agent.Config{URL: url, MachineID: id, Key: kp, NATSOptions: opts})
	stacktest.Spawn(t, a)
	return a
}

// siteResyncAge is the control service's cc_site_resync_age_seconds for
// site, read from its /metrics.
func siteResyncAge(t *testing.T, svc *controlsvc.Service, site string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	svc.HTTPHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	name := `cc_site_resync_age_seconds{site="` + site + `"}`
	f := strings.Fields(grepPrefix(rec.Body.String(), name))
	if len(f) != 2 {
		t.Fatalf("/metrics has no single %s: %q", name, f)
	}
	age, err := strconv.ParseFloat(f[1], 64)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return age
}

// waitSiteResyncs waits until the control service has finished n
// presence resyncs of each of sites since the call: each is seen as the
// site's resync age falling (it grows between resyncs).
func waitSiteResyncs(t *testing.T, svc *controlsvc.Service, n int, d time.Duration, sites ...string) {
	t.Helper()
	prev, seen := map[string]float64{}, map[string]int{}
	for _, s := range sites {
		prev[s] = siteResyncAge(t, svc, s)
	}
	stacktest.WaitFor(t, fmt.Sprintf("%d presence resyncs of %s", n, strings.Join(sites, " and ")), d, func() bool {
		done := true
		for _, s := range sites {
			age := siteResyncAge(t, svc, s)
			if age < prev[s] {
				seen[s]++
			}
			prev[s] = age
			done = done && seen[s] >= n
		}
		return done
	})
}

// TestLeafSite: a remote site's broker joins the hub as a leaf node; the
// control service sits behind the hub and authorises the links. Agents
// registered to the site are admitted by the callout across the leaf
// link, are ONLINE, answer direct and broadcast calls from an operator at
// the hub, and are seen leaving. An unregistered machine at the site is
// refused and listed as pending; a machine of the hub, an operator, and
// a machine registered to another site are refused at the site; a machine
// moved to another site is closed where it was. (Before
// issue #11 operators could connect at a site and broadcast to the whole
// fleet through it: a site's link now carries only its own machines'
// calls, so operators connect to the hub.)
func TestLeafSite(t *testing.T) {
	dir := t.TempDir()
	hub, sites, ls := startLeafSites(t, dir, leafSecret, "dc2", "dc3")
	svc := controlBehindSites(t, dir, hub.ClientURL(), 2*time.Second, ls)
	waitLinked(t, sites[0])
	waitLinked(t, sites[1])

	startSiteAgent(t, svc, hub.ClientURL(), "10.3.0.1_hq", "")
	remote := startSiteAgent(t, svc, sites[0].ClientURL(), "10.3.2.7_dc2-web", "dc2")
	startSiteAgent(t, svc, sites[0].ClientURL(), "10.3.2.8_dc2-db", "dc2")
	app := startSiteAgent(t, svc, sites[1].ClientURL(), "10.3.3.1_dc3-app", "dc3")
	for _, id := range []string{"10.3.0.1_hq", "10.3.2.7_dc2-web", "10.3.2.8_dc2-db", "10.3.3.1_dc3-app"} {
		stacktest.WaitFor(t, id+" ONLINE", 10*time.Second, func() bool { return stacktest.Online(svc, id) })
	}
	admin := newOperator(t, svc, "ops", "admin")
	nc := operatorConn(t, hub.ClientURL(), admin)
	// The FLEET links re-authorised as machines were registered: wait for
	// the call to get through.
	stacktest.WaitFor(t, "a call from the hub answered at the site", 10*time.Second, func() bool {
		_, err := stacktest.Request(nc, "10.3.2.7_dc2-web", "current-load", []byte("{}"), time.Second)
		return err == nil
	})
	callLoad(t, nc, "10.3.2.7_dc2-web", "call from the hub to the site's agent")
	callLoad(t, nc, "10.3.3.1_dc3-app", "call from the hub to the other site's agent")
	broadcastReaches(t, nc, 4, "broadcast from the hub")

	// Refused at the site: an unregistered machine (recorded as pending),
	// the hub's machine, another site's machine, an operator.
	kp, _ := nkeys.CreateUser()
	if _, err := connectAs(sites[0].ClientURL(), kp, "10.3.2.99_dc2-new"); !isAuthErr(err) {
		t.Fatalf("unregistered machine at the site: got %v, want an authorization violation", err)
	}
	stacktest.WaitFor(t, "the stranger pending", 5*time.Second, func() bool {
		for _, p := range svc.Registry().Pending() {
			if p.ID == "10.3.2.99_dc2-new" {
				return true
			}
		}
		return false
	})
	for _, id := range []string{"10.3.0.2_hq-b", "10.3.3.2_dc3-b"} {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		site := map[string]string{"10.3.0.2_hq-b": "", "10.3.3.2_dc3-b": "dc3"}[id]
		if _, err := svc.Registry().SetMachineAt(id, pub, site, nil, "test", false); err != nil {
			t.Fatal(err)
		}
		if nc, err := connectAs(sites[0].ClientURL(), kp, id); !isAuthErr(err) {
			if nc != nil {
				nc.Close()
			}
			t.Fatalf("machine %s (site %q) at site dc2: got %v, want an authorization violation", id, site, err)
		}
	}
	if nc, err := connectAs(sites[0].ClientURL(), stacktest.LoadKey(t, admin), "op"); !isAuthErr(err) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("operator at site dc2: got %v, want an authorization violation", err)
	}

	// Leaving at the site is seen behind the hub.
	events, err := nc.SubscribeSync(fleet.PresenceEventSubject("left", "10.3.2.7_dc2-web"))
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	remote.Close()
	if _, err := events.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("no left event for the site's agent: %v", err)
	}
	// A resync (CONNZ through the site's account) keeps the site's other
	// machines and does not resurrect the one that left. Two resyncs of
	// each site: the second began after the first ended, so after the
	// leave.
	waitSiteResyncs(t, svc, 2, 15*time.Second, "dc2", "dc3")
	if stacktest.Online(svc, "10.3.2.7_dc2-web") || !stacktest.Online(svc, "10.3.0.1_hq") || !stacktest.Online(svc, "10.3.2.8_dc2-db") || !stacktest.Online(svc, "10.3.3.1_dc3-app") {
		t.Errorf("after a resync: snapshot %+v", svc.Snapshot().Servers)
	}
	// Removing a machine at the site, from the hub, closes its
	// connection there at once (KICK through the site's account).
	cl, err := bench.Connect(hub.ClientURL(), bench.WithSeedFile(admin))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	res, err := cl.RemoveMachine(context.Background(), "10.3.2.8_dc2-db")
	if err != nil || res.Closed != 1 {
		t.Fatalf("remove the site's machine: %+v %v", res, err)
	}
	stacktest.WaitFor(t, "the removed machine to leave", 5*time.Second, func() bool { return !stacktest.Online(svc, "10.3.2.8_dc2-db") })
	// Moving a machine to another site closes its connection where it
	// was; it is refused there from now on.
	ch, err := cl.AddMachineAt(context.Background(), "10.3.3.1_dc3-app", app.PublicKey(), "dc2", nil, true)
	if err != nil || ch.Closed != 1 || ch.Site != "dc2" {
		t.Fatalf("move dc3's machine to dc2: %+v %v", ch, err)
	}
	stacktest.WaitFor(t, "the moved machine to leave", 5*time.Second, func() bool { return !stacktest.Online(svc, "10.3.3.1_dc3-app") })
}

// TestLeafConfigExamples runs deploy/leaf/hub.json and site-dc2.json with
// the real cc-broker, only addresses and paths moved into the test (the
// certificates from a test CA): the site is created with `cc-broker
// leaf-site dc2` exactly as the README says, links to the hub over TLS,
// the control service sits behind the hub, an agent connects to the
// site's broker, is admitted, ONLINE, and answers an operator at the
// hub; every client connection is TLS.
func TestLeafConfigExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cc-broker")
	}
	bin := buildCCBroker(t)
	dir, etc := t.TempDir(), t.TempDir()
	stacktest.BrokerAuth(t, dir)
	secret := filepath.Join(etc, "leaf-dc2.secret")
	entry, err := exec.Command(bin, "leaf-site", "dc2", "--secret-out", secret, "--json").Output()
	if err != nil {
		t.Fatalf("cc-broker leaf-site: %v", err)
	}
	if err := os.WriteFile(filepath.Join(etc, "leaf-sites.json"), []byte("["+string(entry)+"]"), 0o600); err != nil {
		t.Fatal(err)
	}
	certs := stacktest.TLSFiles(t)
	copyFile(t, certs.CA, filepath.Join(etc, "tls", "ca.pem"))
	for _, name := range []string{"cc-hub", "cc-site-dc2"} {
		copyFile(t, certs.Cert, filepath.Join(etc, "tls", name+".pem"))
		copyFile(t, certs.Key, filepath.Join(etc, "tls", name+"-key.pem"))
	}
	trust := nats.RootCAs(certs.CA)
	ports := freePorts(t, 3) // hub clients, hub leaf listener, site clients
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := func(file string, replace ...string) {
		cfg := strings.NewReplacer(append(replace,
			"/etc/commandcontrol/broker-auth.json", filepath.Join(dir, controlsvc.BrokerAuthFile),
			"/etc/commandcontrol/", etc+"/",
			"/var/lib/cc-broker/jetstream", filepath.Join(t.TempDir(), "js"),
			"127.0.0.1:8222", "127.0.0.1:0")...).Replace(readDeploy(t, "leaf/"+file))
		runCCBroker(t, ctx, bin, file, cfg)
	}
	url := func(p int) string { return "tls://127.0.0.1:" + itoa(p) }
	start("hub.json", "0.0.0.0:4222", "127.0.0.1:"+itoa(ports[0]), "0.0.0.0:7422", "127.0.0.1:"+itoa(ports[1]))
	start("site-dc2.json", "0.0.0.0:4222", "127.0.0.1:"+itoa(ports[2]), "cc-hub.example.net:7422", "127.0.0.1:"+itoa(ports[1]))

	sites, err := broker.LoadLeafSites(filepath.Join(etc, "leaf-sites.json"))
	if err != nil {
		t.Fatal(err)
	}
	svc := controlBehindRetrying(t, ctx, dir, url(ports[0]), sites, trust)
	defer svc.Close()
	// The site's broker may still be linking (the callout authorises its
	// links): the agent retries until the callout answers across them.
	startSiteAgent(t, svc, url(ports[2]), "10.4.2.7_dc2-app", "dc2", trust)
	stacktest.WaitFor(t, "the agent at the site ONLINE", 20*time.Second, func() bool { return stacktest.Online(svc, "10.4.2.7_dc2-app") })
	nc := operatorConn(t, url(ports[0]), newOperator(t, svc, "ops", "admin"), trust)
	// ONLINE comes with the connect event; the agent's subscriptions
	// reach the hub over the leaf link on their own, so a call right then
	// may find nobody yet (the SDK re-sends for that). Wait for an answer.
	var m *nats.Msg
	stacktest.WaitFor(t, "a call from the hub answered by the agent at the site", 15*time.Second, func() bool {
		var err error
		m, err = stacktest.Request(nc, "10.4.2.7_dc2-app", "machine-info", nil, time.Second)
		return err == nil
	})
	if stacktest.Replier(m) != "10.4.2.7_dc2-app" {
		t.Fatalf("call from the hub to the agent at the site: answered on %s", m.Subject)
	}
}
