package stacktest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
)

// StartTLSBroker is [StartBroker] whose client port speaks only TLS, with
// the server certificate certFile and its key keyFile; with clientCA set
// it also requires a client certificate that CA signed (mutual TLS). It
// returns the broker's tls:// URL. Start the control service on it with
// StartControl(t, WithDataDir(dataDir), WithBroker(url), WithBrokerTLS(…)).
//
// The broker's own TLS flags are cc-broker's; this sets the nats-server
// options directly, so tests of the clients need nothing more.
func StartTLSBroker(t testing.TB, dataDir, certFile, keyFile, clientCA string) string {
	t.Helper()
	cfg := broker.Config{Listen: "127.0.0.1:0", Auth: BrokerAuth(t, dataDir), PingInterval: ExternalPingInterval, MaxPingsOut: MaxPingsOut}
	opts, err := broker.Options(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile, CaFile: clientCA, Verify: clientCA != ""})
	if err != nil {
		t.Fatal(err)
	}
	opts.TLSConfig, opts.TLS, opts.TLSVerify, opts.TLSTimeout = tc, true, clientCA != "", 5
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(WaitTimeout) {
		t.Fatalf("TLS broker not ready after %s", WaitTimeout)
	}
	addr, ok := srv.Addr().(*net.TCPAddr)
	if !ok {
		t.Fatalf("TLS broker address %v", srv.Addr())
	}
	return fmt.Sprintf("tls://%s", net.JoinHostPort("127.0.0.1", strconv.Itoa(addr.Port)))
}

// ClientTLS is the TLS configuration of a client that trusts the CA in
// caFile and, when certFile is set, presents that client certificate.
func ClientTLS(t testing.TB, caFile, certFile, keyFile string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", caFile)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg
}

// TLSStack is a control service on a stand-alone broker whose client port
// speaks only TLS, with the files a client needs to reach it.
type TLSStack struct {
	Svc *controlsvc.Service
	// URL is the broker's tls:// URL.
	URL string
	// CA signed the broker's certificate and ClientCert; OtherCA signed
	// neither (the wrong CA), but OtherClientCert.
	CA, OtherCA                     string
	ClientCert, ClientKey           string
	OtherClientCert, OtherClientKey string
}

// StartTLSStack starts a [StartTLSBroker] broker — requiring a client
// certificate when mutual — and a control service that reaches it over
// TLS (with the client certificate), both stopped when the test ends.
func StartTLSStack(t testing.TB, mutual bool, opts ...Option) *TLSStack {
	t.Helper()
	ca, cert, key, clientCert, clientKey := TLSFiles(t).Files()
	other, _, _, otherCert, otherKey := TLSFiles(t).Files()
	clientCA := ""
	if mutual {
		clientCA = ca
	}
	data := t.TempDir()
	url := StartTLSBroker(t, data, cert, key, clientCA)
	opts = append([]Option{WithDataDir(data), WithBroker(url), WithBrokerTLS(ClientTLS(t, ca, clientCert, clientKey))}, opts...)
	svc := StartControl(t, opts...)
	return &TLSStack{Svc: svc, URL: url, CA: ca, OtherCA: other, ClientCert: clientCert, ClientKey: clientKey,
		OtherClientCert: otherCert, OtherClientKey: otherKey}
}
