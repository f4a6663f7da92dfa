package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"
)

// Helpers for the TLS and route-authentication tests.

// copyFile copies src to dst (mode 0600), creating dst's directory.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// httpsClient trusts only the CA in caFile.
func httpsClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: stacktest.ClientTLS(t, caFile, "", "")}}
}

// rogueLog keeps a rogue server's log lines.
type rogueLog struct{ stacktest.Buffer }

func (l *rogueLog) logf(format string, v ...any)    { fmt.Fprintf(&l.Buffer, format+"\n", v...) }
func (l *rogueLog) Noticef(format string, v ...any) { l.logf(format, v...) }
func (l *rogueLog) Warnf(format string, v ...any)   { l.logf(format, v...) }
func (l *rogueLog) Fatalf(format string, v ...any)  { l.logf(format, v...) }
func (l *rogueLog) Errorf(format string, v ...any)  { l.logf(format, v...) }
func (l *rogueLog) Debugf(format string, v ...any)  { l.logf(format, v...) }
func (l *rogueLog) Tracef(format string, v ...any)  { l.logf(format, v...) }

// count is how many lines contain s.
func (l *rogueLog) count(s string) int { return strings.Count(l.String(), s) }

// startRogue starts a plain nats-server with the cluster's name and
// accounts and no credentials, routing to routes.
func startRogue(t *testing.T, log *rogueLog, routes string) *server.Server {
	t.Helper()
	sys, ctl, fl := server.NewAccount(broker.SystemAccount), server.NewAccount(broker.ControlAccount), server.NewAccount(broker.FleetAccount)
	s, err := server.NewServer(&server.Options{
		ServerName: "rogue", Host: "127.0.0.1", Port: -1, NoSigs: true,
		Cluster:       server.ClusterOpts{Name: "commandcontrol", Host: "127.0.0.1", Port: -1},
		Routes:        server.RoutesFromStr(routes),
		Accounts:      []*server.Account{sys, ctl, fl},
		SystemAccount: broker.SystemAccount,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.SetLoggerV2(log, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("rogue server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
		if t.Failed() {
			t.Logf("rogue log:\n%s", log.String())
		}
	})
	return s
}

// TestTLSOpensslRecipe runs DEPLOY.md's openssl commands (the host names
// changed to localhost) and routes two brokers over mutual TLS with what
// they make; a client trusting the CA connects over TLS.
func TestTLSOpensslRecipe(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl")
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "DEPLOY.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "# once: the CA")
	recipe, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("DEPLOY.md has no openssl recipe starting with '# once: the CA'")
	}
	recipe = "# once: the CA" + recipe
	recipe = strings.ReplaceAll(recipe, "for b in cc-broker-1 cc-broker-2 cc-broker-3; do", "for b in localhost; do")
	dir := t.TempDir()
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", recipe)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the recipe: %v\n%s\n%s", err, recipe, out)
	}
	files := broker.TLSFiles{CertFile: filepath.Join(dir, "localhost.pem"), KeyFile: filepath.Join(dir, "localhost-key.pem"), CAFile: filepath.Join(dir, "ca.pem")}
	data := t.TempDir()
	ports := freePorts(t, 2)
	var bs []*broker.Broker
	for i := range 2 {
		b := brokerAt(t, data, "127.0.0.1:0", func(c *broker.Config) {
			c.Name, c.TLS, c.ClusterSecret = fmt.Sprintf("b%d", i+1), files, clusterSecret
			c.ClusterListen = fmt.Sprintf("127.0.0.1:%d", ports[i])
			c.Routes = []string{fmt.Sprintf("nats-route://localhost:%d", ports[1-i])}
		})
		bs = append(bs, b)
	}
	stacktest.WaitFor(t, "routes over mutual TLS with the recipe's certificates", 10*time.Second, func() bool {
		return bs[0].Server().NumRoutes() > 0 && bs[1].Server().NumRoutes() > 0
	})
	// A client trusting the CA verifies the client port's certificate.
	pem, err := os.ReadFile(files.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	port := bs[1].Server().Addr().(*net.TCPAddr).Port
	raw, err := net.DialTimeout("tcp", fmt.Sprintf("localhost:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	// NATS sends INFO in clear text first, then the client starts TLS.
	if _, err := bufio.NewReader(raw).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if err := tls.Client(raw, &tls.Config{ServerName: "localhost", RootCAs: pool, MinVersion: tls.VersionTLS12}).Handshake(); err != nil {
		t.Fatalf("TLS to the client port with the recipe's CA: %v", err)
	}
}

// TestLeafLinkTLS: a site links to a hub whose leaf listener is TLS when
// it verifies the hub with the CA (and, when the hub requires one,
// presents a certificate from it). A site in clear text, one that trusts
// another CA, and one without a certificate where one is required never
// link.
func TestLeafLinkTLS(t *testing.T) {
	certs, otherCA := stacktest.TLSFiles(t), stacktest.TLSFiles(t)
	hash, err := bcrypt.GenerateFromPassword([]byte(leafSecret), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	sites := []broker.LeafSite{{Name: "dc2", PasswordBcrypt: string(hash)}}
	var auth broker.AuthKeys
	// hub starts a hub whose leaf listener is TLS, with the control
	// service behind it to authorise the sites' links.
	hub := func(t *testing.T, verify bool) string {
		dir := t.TempDir()
		auth = stacktest.BrokerAuth(t, dir)
		port := freePorts(t, 1)[0]
		b := brokertest.StartWith(t, broker.Config{Listen: "127.0.0.1:0", Name: "hub", Auth: auth, LeafListen: "127.0.0.1:" + itoa(port),
			LeafSites: sites, LeafTLS: broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA, Verify: verify},
			Logger: stacktest.Logger().With("broker", "hub")})
		controlBehindSites(t, dir, b.ClientURL(), time.Minute, sites)
		return "nats-leaf://127.0.0.1:" + itoa(port)
	}
	site := func(t *testing.T, url string, hubTLS broker.TLSFiles) (*broker.Broker, *siteLog) {
		log := &siteLog{}
		b := brokertest.StartWith(t, broker.Config{Listen: "127.0.0.1:0", Name: "site-dc2", Auth: auth, HubTLS: hubTLS,
			Hub:    &broker.LeafHub{URLs: []string{url}, Site: "dc2", Secret: leafSecret},
			Logger: slog.New(slog.NewTextHandler(&log.Buffer, nil))})
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("site log:\n%s", log.String())
			}
		})
		return b, log
	}
	t.Run("server TLS", func(t *testing.T) {
		url := hub(t, false)
		s, _ := site(t, url, broker.TLSFiles{CAFile: certs.CA})
		stacktest.WaitFor(t, "the site linked over TLS for all three accounts", 10*time.Second, func() bool { return s.Server().NumLeafNodes() == 3 })
		// The hub's leaf listener takes nothing but TLS (a site in
		// clear text fails below), so this link is TLS.
		for _, tc := range []struct {
			name   string
			tls    broker.TLSFiles
			reason string
		}{
			{"clear text", broker.TLSFiles{}, "TLS"},
			{"another CA", broker.TLSFiles{CAFile: otherCA.CA}, "certificate signed by unknown authority"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s, log := site(t, url, tc.tls)
				stacktest.WaitFor(t, "the site's link to fail twice (or form)", 10*time.Second, func() bool {
					return log.count("level=ERROR")+log.count("Leafnode connection closed") >= 2 || s.Server().NumLeafNodes() > 0
				})
				if n := s.Server().NumLeafNodes(); n != 0 {
					t.Fatalf("%s: the site linked (%d leaf connections)", tc.name, n)
				}
				if !strings.Contains(log.String(), tc.reason) {
					t.Errorf("the site's log does not say %q:\n%s", tc.reason, log.String())
				}
			})
		}
	})
	t.Run("mutual TLS", func(t *testing.T) {
		url := hub(t, true)
		s, log := site(t, url, broker.TLSFiles{CAFile: certs.CA})
		stacktest.WaitFor(t, "the site without a certificate to fail twice (or link)", 10*time.Second, func() bool {
			return log.count("level=ERROR")+log.count("Leafnode connection closed") >= 2 || s.Server().NumLeafNodes() > 0
		})
		if n := s.Server().NumLeafNodes(); n != 0 {
			t.Fatalf("a site without a certificate linked (%d leaf connections)", n)

		}
		s, _ = site(t, url, broker.TLSFiles{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey})
		stacktest.WaitFor(t, "the site with a certificate linked", 10*time.Second, func() bool { return s.Server().NumLeafNodes() == 3 })
	})
}

// siteLog is a site broker's log, kept to count and show lines.
type siteLog struct{ stacktest.Buffer }

// count is how many lines contain s.
func (l *siteLog) count(s string) int { return strings.Count(l.String(), s) }
