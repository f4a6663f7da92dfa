package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
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
