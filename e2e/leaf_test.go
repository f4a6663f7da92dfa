package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"
)

// startLeafSites starts a hub broker that accepts the given sites on a
// leaf listener, and one site broker per site linked to it with secret.
func startLeafSites(t *testing.T, dataDir string, secret string, sites ...string) (*broker.Broker, []*broker.Broker) {
	t.Helper()
	auth := stacktest.BrokerAuth(t, dataDir)
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	var ls []broker.LeafSite
	for _, s := range sites {
		ls = append(ls, broker.LeafSite{Name: s, PasswordBcrypt: string(hash)})
	}
	leafPort := freePorts(t, 1)[0]
	hub, err := broker.New(broker.Config{Listen: "127.0.0.1:0", Name: "hub", Auth: auth, PingInterval: time.Second,
		LeafListen: "127.0.0.1:" + itoa(leafPort), LeafSites: ls, Logger: testLogger(t).With("broker", "hub")})
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Shutdown)
	var out []*broker.Broker
	for _, s := range sites {
		b, err := broker.New(broker.Config{Listen: "127.0.0.1:0", Name: "site-" + s, Auth: auth, PingInterval: time.Second,
			Hub:    &broker.LeafHub{URLs: []string{"nats-leaf://127.0.0.1:" + itoa(leafPort)}, Site: s, Secret: secret},
			Logger: testLogger(t).With("broker", s)})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Shutdown)
		waitFor(t, "site "+s+" linked to the hub for all three accounts", 10*time.Second, func() bool {
			return b.Server().NumLeafNodes() == 3
		})
		out = append(out, b)
	}
	return hub, out
}

// TestLeafSite: a remote site's broker joins the hub as a leaf node; the
// control service sits behind the hub. An agent at the site is admitted
// by the callout across the leaf link, is ONLINE, answers direct and
// broadcast calls from an operator at the hub, and is seen leaving. An
// unregistered machine at the site is refused and listed as pending.
func TestLeafSite(t *testing.T) {
	dir := t.TempDir()
	hub, sites := startLeafSites(t, dir, "site-secret-0123456789", "dc2")
	svc := controlBehind(t, dir, hub.ClientURL(), 2*time.Second)

	startAgentAt(t, svc, hub.ClientURL(), "10.3.0.1_hq", true, nil)
	remote := startAgentAt(t, svc, sites[0].ClientURL(), "10.3.2.7_dc2-web", true, nil)
	startAgentAt(t, svc, sites[0].ClientURL(), "10.3.2.8_dc2-db", true, nil)
	for _, id := range []string{"10.3.0.1_hq", "10.3.2.7_dc2-web", "10.3.2.8_dc2-db"} {
		waitFor(t, id+" ONLINE", 10*time.Second, func() bool { return online(svc, id) })
	}
	nc := operatorConn(t, hub.ClientURL(), newOperator(t, svc, "ops", "admin"))
	callLoad(t, nc, "10.3.2.7_dc2-web", "call from the hub to the site's agent")
	// A broadcast from an operator at the site reaches all three machines.
	siteSeed := newOperator(t, svc, "site-ops", "admin")
	siteOp := operatorConn(t, sites[0].ClientURL(), siteSeed)
	broadcastReaches(t, siteOp, 3, "broadcast from the site")

	// An unregistered machine at the site: refused, recorded as pending.
	kp, _ := nkeys.CreateUser()
	if _, err := connectAs(sites[0].ClientURL(), kp, "10.3.2.99_dc2-new"); !isAuthErr(err) {
		t.Fatalf("unregistered machine at the site: got %v, want an authorization violation", err)
	}
	waitFor(t, "the stranger pending", 5*time.Second, func() bool {
		for _, p := range svc.Registry().Pending() {
			if p.ID == "10.3.2.99_dc2-new" {
				return true
			}
		}
		return false
	})

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
	// A resync (CONNZ across the leaf link) keeps the site's other
	// machines and does not resurrect the one that left.
	time.Sleep(2500 * time.Millisecond)
	if online(svc, "10.3.2.7_dc2-web") || !online(svc, "10.3.0.1_hq") || !online(svc, "10.3.2.8_dc2-db") {
		t.Errorf("after a resync: snapshot %+v", svc.Snapshot().Servers)
	}
	// Removing a machine at the site, from the site, closes its
	// connection there at once (the broker's KICK across the leaf link).
	cl, err := bench.Connect(sites[0].ClientURL(), bench.WithSeedFile(siteSeed))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	res, err := cl.RemoveMachine(context.Background(), "10.3.2.8_dc2-db")
	if err != nil || res.Closed != 1 {
		t.Fatalf("remove the site's machine: %+v %v", res, err)
	}
	waitFor(t, "the removed machine to leave", 5*time.Second, func() bool { return !online(svc, "10.3.2.8_dc2-db") })
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

	svc := controlBehindRetrying(t, ctx, dir, url(ports[0]), trust)
	defer svc.Close()
	// The site's broker may still be linking: the agent retries until the
	// callout answers across the leaf connection.
	startAgentWith(t, svc, agent.Config{URL: url(ports[2]), MachineID: "10.4.2.7_dc2-app", NATSOptions: []nats.Option{trust}}, true, nil)
	waitFor(t, "the agent at the site ONLINE", 20*time.Second, func() bool { return online(svc, "10.4.2.7_dc2-app") })
	nc := operatorConn(t, url(ports[0]), newOperator(t, svc, "ops", "admin"), trust)
	// ONLINE comes with the connect event; the agent's subscriptions
	// reach the hub over the leaf link on their own, so a call right then
	// may find nobody yet (the SDK re-sends for that). Wait for an answer.
	var m *nats.Msg
	waitFor(t, "a call from the hub answered by the agent at the site", 15*time.Second, func() bool {
		var err error
		m, err = stacktest.Request(nc, "10.4.2.7_dc2-app", "machine-info", nil, time.Second)
		return err == nil
	})
	if stacktest.Replier(m) != "10.4.2.7_dc2-app" {
		t.Fatalf("call from the hub to the agent at the site: answered on %s", m.Subject)
	}
}
