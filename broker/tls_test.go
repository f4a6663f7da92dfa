package broker_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Route authentication and TLS on every listener, with real servers on
// loopback: brokers from this package and rogue plain nats-servers.

const testClusterSecret = "route-secret-0123456789abcdef"

// serverLog is a nats-server logger (and slog sink) that keeps every line.
type serverLog struct{ stacktest.Buffer }

func (l *serverLog) logf(level, format string, v ...any) {
	fmt.Fprintf(&l.Buffer, "["+level+"] "+format+"\n", v...)
}
func (l *serverLog) Noticef(format string, v ...any) { l.logf("INF", format, v...) }
func (l *serverLog) Warnf(format string, v ...any)   { l.logf("WRN", format, v...) }
func (l *serverLog) Fatalf(format string, v ...any)  { l.logf("FTL", format, v...) }
func (l *serverLog) Errorf(format string, v ...any)  { l.logf("ERR", format, v...) }
func (l *serverLog) Debugf(format string, v ...any)  { l.logf("DBG", format, v...) }
func (l *serverLog) Tracef(format string, v ...any)  { l.logf("TRC", format, v...) }

// count is how many lines contain all of parts.
func (l *serverLog) count(parts ...string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

func (l *serverLog) slog() *slog.Logger { return slog.New(slog.NewTextHandler(&l.Buffer, nil)) }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clusterBroker starts a broker with keys' auth whose cluster listener is
// on a free loopback port; tweak sets the rest.
func clusterBroker(t *testing.T, keys *brokertest.Keys, name string, log *serverLog, tweak func(*broker.Config)) *broker.Broker {
	t.Helper()
	b, _ := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) {
		c.Auth, c.Name, c.ClusterListen, c.Logger = keys.Auth(), name, "127.0.0.1:0", log.slog()
		c.ClusterSecret = testClusterSecret
		if tweak != nil {
			tweak(c)
		}
	}))
	return b
}

// rogueServer starts a plain nats-server, configured like an attacker
// who knows the cluster's name and accounts, with a FLEET user of its own.
func rogueServer(t *testing.T, log *serverLog, tweak func(*server.Options)) *server.Server {
	t.Helper()
	sys, ctl, fl := server.NewAccount(broker.SystemAccount), server.NewAccount(broker.ControlAccount), server.NewAccount(broker.FleetAccount)
	opts := &server.Options{
		ServerName: "rogue", Host: "127.0.0.1", Port: -1, NoSigs: true,
		Cluster:       server.ClusterOpts{Name: "commandcontrol", Host: "127.0.0.1", Port: -1},
		Accounts:      []*server.Account{sys, ctl, fl},
		SystemAccount: broker.SystemAccount,
		Users:         []*server.User{{Username: "rogue", Password: "rogue", Account: fl}},
	}
	if tweak != nil {
		tweak(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.SetLoggerV2(log, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("rogue server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// fleetSpy subscribes as the control service's FLEET user on b to what a
// rogue would publish.
func fleetSpy(t *testing.T, b *broker.Broker, keys *brokertest.Keys, opts ...nats.Option) *nats.Subscription {
	t.Helper()
	nc := brokertest.Connect(t, b, keys.Fleet, opts...)
	sub, err := nc.SubscribeSync("rogue.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

// rogueSays publishes from a client of the rogue server into its FLEET.
func rogueSays(t *testing.T, rogue *server.Server, n int) {
	t.Helper()
	nc, err := nats.Connect(rogue.ClientURL(), nats.UserInfo("rogue", "rogue"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for i := range n {
		if err := nc.Publish(fmt.Sprintf("rogue.%d", i), []byte("forged")); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// noRoutes checks that no two of servers have a route to each other.
// Routes to other servers are not this test's: tests of other packages
// run at the same time, and a broker of theirs whose peer went away
// keeps dialing that peer's old port, which the kernel may since have
// given a server here (the rogue, which takes any route).
func noRoutes(t *testing.T, what string, servers ...*server.Server) {
	t.Helper()
	ids := map[string]bool{}
	for _, s := range servers {
		ids[s.ID()] = true
	}
	for _, s := range servers {
		rz, err := s.Routez(nil)
		if err != nil {
			t.Fatal(err)
		}
		var peers []string
		for _, r := range rz.Routes {
			if ids[r.RemoteID] || len(servers) == 1 {
				peers = append(peers, r.RemoteName)
			}
		}
		if len(peers) > 0 {
			t.Fatalf("%s: %s has %d routes, to %v", what, s.Name(), len(peers), peers)
		}
	}
}

func nothingArrives(t *testing.T, sub *nats.Subscription, what string) {
	t.Helper()
	if m, err := sub.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("%s: the cluster received %s %q from the rogue", what, m.Subject, m.Data)
	}
}

// TestThreatRogueServerCannotRoute: a plain nats-server, without the
// cluster secret or with a wrong one, pointing a route at a broker's
// authenticated cluster port is refused every time: no route on either
// side, and what its clients publish never reaches the cluster. A real
// broker with the secret joins the same port.
func TestThreatRogueServerCannotRoute(t *testing.T) {
	keys := brokertest.NewKeys(t)
	var blog serverLog
	b := clusterBroker(t, keys, "b1", &blog, func(c *broker.Config) { c.ClusterSecret = testClusterSecret })
	spy := fleetSpy(t, b, keys)
	for _, tc := range []struct{ name, userinfo string }{
		{"no credentials", ""},
		{"wrong secret", broker.RouteUser + ":not-the-secret-0123456789@"},
		{"wrong user", "admin:" + testClusterSecret + "@"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := blog.count("Router connection closed: Authentication Failure")
			var rlog serverLog
			rogue := rogueServer(t, &rlog, func(o *server.Options) {
				o.Routes = server.RoutesFromStr("nats-route://" + tc.userinfo + strings.TrimPrefix(b.ClusterURL(), "nats-route://"))
			})
			// The rogue retries its route every second: wait for two
			// refusals, then nothing is routed either way.
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("broker log:\n%s\nrogue log:\n%s", blog.String(), rlog.String())
				}
			})
			waitFor(t, "the broker to refuse the rogue's route twice (or let it in)", 10*time.Second, func() bool {
				return blog.count("Router connection closed: Authentication Failure") >= before+2 || rogue.NumRoutes() > 0
			})
			noRoutes(t, tc.name, b.Server(), rogue)
			rogueSays(t, rogue, 10)
			nothingArrives(t, spy, tc.name)
			noRoutes(t, tc.name, b.Server(), rogue)
		})
	}
	// The real peer with the secret joins through the same port.
	var log2 serverLog
	b2 := clusterBroker(t, keys, "b2", &log2, func(c *broker.Config) {
		c.ClusterSecret, c.Routes = testClusterSecret, []string{b.ClusterURL()}
	})
	waitFor(t, "the real peer to route", 10*time.Second, func() bool { return b.Server().NumRoutes() > 0 && b2.Server().NumRoutes() > 0 })
	// The secret is in neither log nor in what monitoring shows.
	vz, err := b2.Server().Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	shown, _ := json.Marshal(vz)
	if strings.Contains(blog.String()+log2.String()+string(shown), testClusterSecret) {
		t.Error("the cluster secret appears in a broker's log or /varz")
	}
}

// routeTLS is a broker's route TLS from certs (mutual: Options forces
// Verify on routes).
func routeTLS(c stacktest.TLSCerts) broker.TLSFiles {
	return broker.TLSFiles{CertFile: c.Cert, KeyFile: c.Key, CAFile: c.CA}
}

func serverTLS(t *testing.T, c stacktest.TLSCerts, verify bool) *tls.Config {
	t.Helper()
	tc, err := broker.TLSFiles{CertFile: c.Cert, KeyFile: c.Key, CAFile: c.CA, Verify: verify}.ServerConfig("test")
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// TestThreatRogueCannotAcceptRoute: a broker lists a route to an address
// a rogue server now holds (a DNS or address takeover). With routes over
// mutual TLS the broker checks the server it dials: a rogue with a
// certificate from another CA, or with no TLS, never becomes a route, and
// nothing its clients publish reaches the cluster.
func TestThreatRogueCannotAcceptRoute(t *testing.T) {
	certs, otherCA := stacktest.TLSFiles(t), stacktest.TLSFiles(t)
	for _, tc := range []struct {
		name   string
		rogue  func(*server.Options)
		reason string
	}{
		{"certificate from another CA", func(o *server.Options) {
			o.Cluster.TLSConfig, o.Cluster.TLSTimeout = serverTLS(t, otherCA, false), 2
		}, "certificate signed by unknown authority"},
		{"no TLS", nil, "TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := brokertest.NewKeys(t)
			var rlog, blog serverLog
			rogue := rogueServer(t, &rlog, tc.rogue)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("broker log:\n%s\nrogue log:\n%s", blog.String(), rlog.String())
				}
			})
			rogueURL := fmt.Sprintf("nats-route://%s", rogue.ClusterAddr())
			b := clusterBroker(t, keys, "b1", &blog, func(c *broker.Config) {
				c.ClusterTLS, c.ClusterSecret, c.Routes = routeTLS(certs), testClusterSecret, []string{rogueURL}
			})
			spy := fleetSpy(t, b, keys)
			waitFor(t, "the broker's route to the rogue to fail twice (or succeed)", 10*time.Second, func() bool {
				return blog.count("rid:", "TLS route handshake error") >= 2 || rogue.NumRoutes() > 0
			})
			if !strings.Contains(blog.String(), tc.reason) {
				t.Errorf("the broker's log does not say why (%q)", tc.reason)
			}
			noRoutes(t, tc.name, b.Server(), rogue)
			rogueSays(t, rogue, 10)
			nothingArrives(t, spy, tc.name)
		})
	}
}

// TestRouteMutualTLS: brokers whose route certificates come from the
// configured CA route to each other; a broker whose certificate another
// CA signed is refused at both ends, though it has the secret.
func TestRouteMutualTLS(t *testing.T) {
	certs, otherCA := stacktest.TLSFiles(t), stacktest.TLSFiles(t)
	keys := brokertest.NewKeys(t)
	var log1, log2, log3 serverLog
	b1 := clusterBroker(t, keys, "b1", &log1, func(c *broker.Config) { c.ClusterTLS = routeTLS(certs) })
	b2 := clusterBroker(t, keys, "b2", &log2, func(c *broker.Config) {
		c.ClusterTLS, c.Routes = routeTLS(certs), []string{b1.ClusterURL()}
	})
	waitFor(t, "routes over mutual TLS", 10*time.Second, func() bool { return b1.Server().NumRoutes() > 0 && b2.Server().NumRoutes() > 0 })
	vz, err := b1.Server().Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !vz.Cluster.TLSRequired || !vz.Cluster.TLSVerify {
		t.Errorf("routes: TLS required %v, verified %v; want both", vz.Cluster.TLSRequired, vz.Cluster.TLSVerify)
	}
	// A message crosses the route: the route is real.
	sub, err := brokertest.Connect(t, b1, keys.Control).SubscribeSync("probe")
	if err != nil {
		t.Fatal(err)
	}
	pub := brokertest.Connect(t, b2, keys.Control)
	waitFor(t, "a message to cross the route", 10*time.Second, func() bool {
		_ = pub.Publish("probe", []byte("peer"))
		_ = pub.Flush()
		_, err := sub.NextMsg(100 * time.Millisecond)
		return err == nil
	})

	b3 := clusterBroker(t, keys, "b3", &log3, func(c *broker.Config) {
		c.ClusterTLS, c.Routes = routeTLS(otherCA), []string{b1.ClusterURL()}
	})
	waitFor(t, "the other CA's broker to be refused twice (or let in)", 10*time.Second, func() bool {
		return log3.count("rid:", "TLS route handshake error") >= 2 || b3.Server().NumRoutes() > 0
	})
	noRoutes(t, "a broker with another CA's certificate", b3.Server())
	for _, r := range rzRoutes(t, b1) {
		if r.RemoteName == "b3" {
			t.Fatalf("b1 has a route to b3")
		}
	}
}

func rzRoutes(t *testing.T, b *broker.Broker) []*server.RouteInfo {
	t.Helper()
	rz, err := b.Server().Routez(nil)
	if err != nil {
		t.Fatal(err)
	}
	return rz.Routes
}

// TestOptionsRefuseOpenListeners: a cluster listener off loopback without
// route authentication, a leaf listener or a hub link off loopback in
// clear text are refused at start, each saying what to add.
func TestOptionsRefuseOpenListeners(t *testing.T) {
	certs := stacktest.TLSFiles(t)
	site := func(c *broker.Config, url string) {
		c.Hub = &broker.LeafHub{URLs: []string{url}, Site: "dc2", Secret: "s3cret-s3cret"}
	}
	hub := func(c *broker.Config, listen string) {
		c.LeafListen, c.LeafSites = listen, []broker.LeafSite{{Name: "dc2", PasswordBcrypt: testHash}}
	}
	for _, tc := range []struct {
		name string
		set  func(*broker.Config)
		want []string // "" means accepted
	}{
		{"cluster on every interface, no auth", func(c *broker.Config) { c.ClusterListen = "0.0.0.0:6222" },
			[]string{"no cluster secret", "--cluster-secret-file", "cc-broker cluster-secret", "--tls-cert", "--tls-ca"}},
		{"cluster on a LAN address, no auth", func(c *broker.Config) { c.ClusterListen = "10.1.2.3:6222" }, []string{"--cluster-secret-file"}},
		{"cluster on no host, no auth", func(c *broker.Config) { c.ClusterListen = ":6222" }, []string{"--cluster-secret-file"}},
		{"cluster with a secret", func(c *broker.Config) { c.ClusterListen, c.ClusterSecret = "0.0.0.0:6222", testClusterSecret }, nil},
		{"cluster with mutual TLS and no secret", func(c *broker.Config) { c.ClusterListen, c.ClusterTLS = "0.0.0.0:6222", routeTLS(certs) }, []string{"--cluster-secret-file"}},
		{"cluster with mutual TLS and the secret", func(c *broker.Config) {
			c.ClusterListen, c.ClusterTLS, c.ClusterSecret = "0.0.0.0:6222", routeTLS(certs), testClusterSecret
		}, nil},
		{"cluster with the client certificate and no secret", func(c *broker.Config) {
			c.ClusterListen, c.TLS = "0.0.0.0:6222", broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA}
		}, []string{"--cluster-secret-file"}},
		{"cluster TLS without a CA", func(c *broker.Config) {
			c.ClusterListen, c.ClusterTLS, c.ClusterSecret = "0.0.0.0:6222", broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key}, testClusterSecret
		}, []string{"--cluster-tls-ca"}},
		{"cluster on loopback, no auth", func(c *broker.Config) { c.ClusterListen = "127.0.0.1:6222" }, []string{"--cluster-secret-file"}},
		{"route URL with a password", func(c *broker.Config) {
			c.ClusterListen, c.ClusterSecret, c.Routes = "127.0.0.1:6222", testClusterSecret, []string{"nats-route://u:pw@10.0.0.2:6222"}
		}, []string{"carries credentials", "--cluster-secret-file"}},
		{"secret without a cluster", func(c *broker.Config) { c.ClusterSecret = testClusterSecret }, []string{"--cluster-listen"}},
		{"leaf listener in clear text", func(c *broker.Config) { hub(c, "0.0.0.0:7422") }, []string{"--tls-cert", "--leaf-tls-cert", "--allow-plaintext-leaf"}},
		{"leaf listener in clear text, allowed", func(c *broker.Config) { hub(c, "0.0.0.0:7422"); c.AllowPlaintextLeaf = true }, nil},
		{"leaf listener over TLS", func(c *broker.Config) {
			hub(c, "0.0.0.0:7422")
			c.LeafTLS = broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key}
		}, nil},
		{"leaf listener on loopback", func(c *broker.Config) { hub(c, "127.0.0.1:7422") }, nil},
		{"hub link in clear text", func(c *broker.Config) { site(c, "nats-leaf://hub.example.net:7422") }, []string{"--hub-tls-ca", "--allow-plaintext-leaf"}},
		{"hub link over TLS", func(c *broker.Config) {
			site(c, "nats-leaf://hub.example.net:7422")
			c.HubTLS.CAFile = certs.CA
		}, nil},
		{"hub link, tls:// with the system's roots", func(c *broker.Config) { site(c, "tls://hub.example.net:7422") }, nil},
		{"hub link on loopback", func(c *broker.Config) { site(c, "nats-leaf://127.0.0.1:7422") }, nil},
		{"hub link verified with --tls-ca", func(c *broker.Config) {
			site(c, "nats-leaf://hub.example.net:7422")
			c.TLS = broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA}
		}, nil},
		{"bad certificate file", func(c *broker.Config) { c.TLS = broker.TLSFiles{CertFile: certs.CA + ".none", KeyFile: certs.Key} }, []string{"--tls-cert", ".none"}},
		{"certificate without key", func(c *broker.Config) { c.TLS = broker.TLSFiles{CertFile: certs.Cert} }, []string{"certificate and its key"}},
		{"CA file with no certificate", func(c *broker.Config) {
			c.TLS = broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.Key}
		}, []string{"holds no PEM certificate"}},
		{"verify without a CA", func(c *broker.Config) {
			c.TLS = broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, Verify: true}
		}, []string{"needs the CA"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := broker.Config{Listen: "127.0.0.1:0", Auth: validAuth(t)}
			tc.set(&cfg)
			_, err := broker.Options(&cfg)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want an error mentioning %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestTLSClientPort: with a certificate the client port speaks only TLS.
// A client that trusts the CA connects; one that does not is refused, and
// one that speaks plain text is never answered. With Verify, a client
// needs a certificate from the CA.
func TestTLSClientPort(t *testing.T) {
	certs, otherCA := stacktest.TLSFiles(t), stacktest.TLSFiles(t)
	b, keys := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) {
		c.TLS = broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA}
	}))
	if !b.TLSRequired() {
		t.Fatal("TLSRequired is false")
	}
	nc := brokertest.Connect(t, b, keys.Control, nats.RootCAs(certs.CA))
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.TLSConnectionState(); err != nil {
		t.Fatalf("connection with the CA is not TLS: %v", err)
	}
	pub, _ := keys.Control.PublicKey()
	for _, tc := range []struct {
		name string
		opts []nats.Option
		want string
	}{
		{"no CA", nil, "certificate signed by unknown authority"},
		{"another CA", []nats.Option{nats.RootCAs(otherCA.CA)}, "certificate signed by unknown authority"},
	} {
		nc, err := nats.Connect(b.ClientURL(), append(tc.opts, nats.Nkey(pub, keys.Control.Sign), nats.NoReconnect())...)
		if err == nil {
			nc.Close()
			t.Fatalf("%s: connected", tc.name)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
	// Plain text on the TLS port: INFO says TLS is required, and a
	// CONNECT and PING in clear text get no PONG.
	if got := plainTextSession(t, b.Server().Addr().String()); strings.Contains(got, "PONG") || !strings.Contains(got, `"tls_required":true`) {
		t.Fatalf("plain-text client got: %q", got)
	}

	// Mutual TLS on the client port.
	mb, mkeys := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) {
		c.TLS = broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA, Verify: true}
	}))
	mpub, _ := mkeys.Control.PublicKey()
	if nc, err := nats.Connect(mb.ClientURL(), nats.RootCAs(certs.CA), nats.Nkey(mpub, mkeys.Control.Sign), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("a client without a certificate connected to a --tls-verify broker")
	}
	if nc, err := nats.Connect(mb.ClientURL(), nats.RootCAs(certs.CA), nats.ClientCert(otherCA.ClientCert, otherCA.ClientKey),
		nats.Nkey(mpub, mkeys.Control.Sign), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("a client with another CA's certificate connected to a --tls-verify broker")
	}
	brokertest.Connect(t, mb, mkeys.Control, nats.RootCAs(certs.CA), nats.ClientCert(certs.ClientCert, certs.ClientKey))
}

// plainTextSession speaks NATS in clear text to addr and returns what the
// server said until it closed the connection (or 5 s passed).
func plainTextSession(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n"))
	got, _ := io.ReadAll(c)
	return string(got)
}

// TestTLSMonitoringHTTPS: with a certificate, monitoring is HTTPS only.
func TestTLSMonitoringHTTPS(t *testing.T) {
	certs := stacktest.TLSFiles(t)
	b, _ := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) {
		c.TLS = broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA, Verify: true}
		c.MonitorListen = "127.0.0.1:0"
	}))
	addr := b.Server().MonitorAddr()
	if addr == nil {
		t.Fatal("no monitoring listener")
	}
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(certs.CA)
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("CA: %v", err)
	}
	// Monitoring asks for no client certificate, even with Verify.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(fmt.Sprintf("https://%s/varz", addr))
	if err != nil {
		t.Fatalf("HTTPS monitoring: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("HTTPS monitoring: status %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	resp, err = (&http.Client{Timeout: 5 * time.Second}).Get(fmt.Sprintf("http://%s/varz", addr))
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("plain HTTP monitoring answered: %s", body)
		}
	}
}

// TestThreatClientCertificateCannotOpenRoute: the CA that signs the
// brokers' route certificates often signs clients' certificates too (for
// --tls-verify) and site brokers'. A rogue server presenting such a
// client-only certificate passes the routes' mutual TLS, but without the
// cluster secret it never routes and nothing it publishes arrives.
func TestThreatClientCertificateCannotOpenRoute(t *testing.T) {
	certs := stacktest.TLSFiles(t)
	keys := brokertest.NewKeys(t)
	var blog, rlog serverLog
	b := clusterBroker(t, keys, "b1", &blog, func(c *broker.Config) { c.ClusterTLS = routeTLS(certs) })
	spy := fleetSpy(t, b, keys)
	clientTLS, err := broker.TLSFiles{CertFile: certs.ClientCert, KeyFile: certs.ClientKey, CAFile: certs.CA, Verify: true}.ServerConfig("rogue")
	if err != nil {
		t.Fatal(err)
	}
	before := blog.count("Authentication Failure")
	rogue := rogueServer(t, &rlog, func(o *server.Options) {
		o.Cluster.TLSConfig, o.Cluster.TLSTimeout = clientTLS, 2
		o.Routes = server.RoutesFromStr(b.ClusterURL())
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker log:\n%s\nrogue log:\n%s", blog.String(), rlog.String())
		}
	})
	waitFor(t, "the broker to refuse the rogue's route twice (or let it in)", 10*time.Second, func() bool {
		return blog.count("Authentication Failure") >= before+2 || rogue.NumRoutes() > 0
	})
	noRoutes(t, "client certificate, no secret", b.Server(), rogue)
	rogueSays(t, rogue, 10)
	nothingArrives(t, spy, "client certificate, no secret")
}

// TestMonitoringOffLoopbackWarned: monitoring off loopback is warned about
// at start even over HTTPS: it has no authentication and shows every
// connection's name, address and subscriptions.
func TestMonitoringOffLoopbackWarned(t *testing.T) {
	certs := stacktest.TLSFiles(t)
	for _, tc := range []struct {
		name string
		tls  broker.TLSFiles
		want string
	}{
		{"plain HTTP", broker.TLSFiles{}, "over plain HTTP"},
		{"HTTPS", broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key}, "over HTTPS but without authentication"},
	} {
		var log serverLog
		if _, err := broker.New(broker.Config{Listen: "127.0.0.1:0", Auth: validAuth(t), MonitorListen: "0.0.0.0:0", TLS: tc.tls, Logger: log.slog()}); err != nil {
			t.Fatal(err)
		}
		if log.count("insecure: monitoring 0.0.0.0:0", tc.want) != 1 {
			t.Errorf("%s: no warning saying %q:\n%s", tc.name, tc.want, log.String())
		}
	}
}
