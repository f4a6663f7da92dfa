package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats-server/v2/server"
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

// readSeed reads a seed file without its newline.
func readSeed(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.TrimSpace(string(b)))
}

// httpsClient trusts only the CA in caFile.
func httpsClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", caFile)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
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
	waitFor(t, "routes over mutual TLS with the recipe's certificates", 10*time.Second, func() bool {
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
