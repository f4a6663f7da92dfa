package natstls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestDecide: plain text goes only to loopback unless allowed; TLS is on
// with a CA, a client certificate, a TLS config, or a tls:// / wss:// URL
// anywhere in the list. Every URL of a list is checked.
func TestDecide(t *testing.T) {
	ca := writeCA(t)
	tests := []struct {
		urls   string
		cfg    Config
		secure bool
		refuse string // the URL the error names; "" for no error
	}{
		{"", Config{}, false, ""},
		{"nats://127.0.0.1:4222", Config{}, false, ""},
		{"127.0.0.1:4222", Config{}, false, ""},
		{"127.0.0.1", Config{}, false, ""},
		{"nats://127.5.6.7:4222", Config{}, false, ""},
		{"localhost:4222", Config{}, false, ""},
		{"nats://LocalHost.:4222", Config{}, false, ""},
		{"nats://[::1]:4222", Config{}, false, ""},
		{"[::1]", Config{}, false, ""},
		{"nats://[::ffff:127.0.0.1]:4222", Config{}, false, ""},
		{"nats://0.0.0.0:4222", Config{}, false, ""},
		{"nats://[::]:4222", Config{}, false, ""},
		{"ws://127.0.0.1:8080", Config{}, false, ""},
		{" nats://127.0.0.1:4222 , localhost:4223 ,", Config{}, false, ""},
		{"nats://10.0.0.5:4222", Config{}, false, "nats://10.0.0.5:4222"},
		{"10.0.0.5:4222", Config{}, false, "nats://10.0.0.5:4222"},
		{"nats://control.example:4222", Config{}, false, "nats://control.example:4222"},
		{"nats://localhost.evil.example:4222", Config{}, false, "nats://localhost.evil.example:4222"},
		{"nats://127.0.0.1.nip.io:4222", Config{}, false, "nats://127.0.0.1.nip.io:4222"},
		{"nats://[2001:db8::1]:4222", Config{}, false, "nats://[2001:db8::1]:4222"},
		{"nats://[fe80::1%25eth0]:4222", Config{}, false, "nats://[fe80::1%25eth0]:4222"},
		{"nats://[::ffff:10.0.0.5]:4222", Config{}, false, "nats://[::ffff:10.0.0.5]:4222"},
		{"ws://10.0.0.5:8080", Config{}, false, "ws://10.0.0.5:8080"},
		{"nats://127.0.0.1:4222,nats://10.0.0.6:4222", Config{}, false, "nats://10.0.0.6:4222"},
		{"localhost, 10.0.0.7", Config{}, false, "nats://10.0.0.7"},
		{"nats://admin:s3cret@10.0.0.5:4222", Config{}, false, "nats://admin:xxxxx@10.0.0.5:4222"},
		{"nats://10.0.0.5:4222", Config{AllowPlaintext: true}, false, ""},
		{"nats://10.0.0.5:4222,ws://x", Config{AllowPlaintext: true}, false, ""},
		{"tls://10.0.0.5:4222", Config{}, true, ""},
		{"wss://10.0.0.5:443", Config{}, true, ""},
		{"tls://10.0.0.5:4222,nats://10.0.0.6:4222", Config{}, true, ""},
		{"nats://10.0.0.5:4222", Config{CAFile: ca}, true, ""},
		{"10.0.0.5:4222,10.0.0.6:4222", Config{CAFile: ca}, true, ""},
	}
	for _, tt := range tests {
		d, err := tt.cfg.Decide(tt.urls)
		if tt.refuse != "" {
			if !errors.Is(err, ErrPlaintext) {
				t.Errorf("%q: err = %v, want ErrPlaintext", tt.urls, err)
				continue
			}
			msg := err.Error()
			for _, want := range []string{"refusing to connect to " + tt.refuse + " in plain text", "--tls-ca FILE", "--allow-plaintext"} {
				if !strings.Contains(msg, want) {
					t.Errorf("%q: error %q lacks %q", tt.urls, msg, want)
				}
			}
			if strings.Contains(msg, "s3cret") {
				t.Errorf("%q: error shows the password: %q", tt.urls, msg)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q %+v: %v", tt.urls, tt.cfg, err)
			continue
		}
		if d.Secure != tt.secure {
			t.Errorf("%q %+v: secure = %v, want %v", tt.urls, tt.cfg, d.Secure, tt.secure)
		}
		if d.guard != (!tt.secure && !tt.cfg.AllowPlaintext) {
			t.Errorf("%q %+v: guard = %v", tt.urls, tt.cfg, d.guard)
		}
	}
}

func TestDecideBadInput(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		urls string
		cfg  Config
		want string
	}{
		{"http://10.0.0.5", Config{}, `scheme "http": want nats://, tls://, ws:// or wss://`},
		{"nats://", Config{}, "has no host"},
		{"nats://[::1", Config{}, `broker URL "nats://[::1"`},
		{"tls://x", Config{CAFile: filepath.Join(dir, "missing.pem")}, "the broker's CA file: open"},
		{"tls://x", Config{CAFile: notPEM}, "holds no PEM certificate"},
		{"tls://x", Config{CertFile: "c.pem"}, "needs both its certificate file and its key file"},
		{"tls://x", Config{CertFile: filepath.Join(dir, "c.pem"), KeyFile: filepath.Join(dir, "k.pem")}, "client certificate"},
	}
	for _, tt := range tests {
		_, err := tt.cfg.Decide(tt.urls)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q %+v: err = %v, want %q", tt.urls, tt.cfg, err, tt.want)
		}
	}
}

// TestNamesSpellTheAdvice: each client names its own settings.
func TestNamesSpellTheAdvice(t *testing.T) {
	names := Names{CA: "bench.WithTLSCA(file)", Cert: "x", Plaintext: "bench.WithPlaintext()"}
	_, err := Config{Names: names}.Decide("nats://10.0.0.5:4222")
	if err == nil || !strings.Contains(err.Error(), "bench.WithTLSCA(file)") || !strings.Contains(err.Error(), "bench.WithPlaintext()") {
		t.Fatalf("got %v", err)
	}
}

type recordingDialer struct{ dialled []string }

func (r *recordingDialer) Dial(_, address string) (net.Conn, error) {
	r.dialled = append(r.dialled, address)
	return nil, errors.New("recorded")
}

// TestGuardRefusesDiscoveredServersOffHost: a plain-text client allowed
// only because its URLs are loopback never dials another address — one a
// cluster advertises, say — and TLS options are what Decide said.
func TestGuardRefusesDiscoveredServersOffHost(t *testing.T) {
	d, err := Config{}.Decide("nats://127.0.0.1:4222")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingDialer{}
	o := apply(t, d.Options(rec, 0))
	if o.Secure || o.CustomDialer == nil {
		t.Fatalf("secure %v, dialer %v", o.Secure, o.CustomDialer)
	}
	for _, addr := range []string{"10.0.0.5:4222", "[2001:db8::1]:4222", "example.com:4222"} {
		if _, err := o.CustomDialer.Dial("tcp", addr); !errors.Is(err, ErrPlaintext) {
			t.Errorf("dial %s: err = %v, want ErrPlaintext", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:4222", "[::1]:4222"} {
		_, _ = o.CustomDialer.Dial("tcp", addr)
	}
	if strings.Join(rec.dialled, " ") != "127.0.0.1:4222 [::1]:4222" {
		t.Fatalf("dialled %q; want only the loopback addresses", rec.dialled)
	}

	allowed, err := Config{AllowPlaintext: true}.Decide("nats://10.0.0.5:4222")
	if err != nil {
		t.Fatal(err)
	}
	if o := apply(t, allowed.Options(nil, 0)); o.Secure || o.CustomDialer != nil {
		t.Fatalf("allowed plain text: secure %v, dialer %v; want nats.go's own", o.Secure, o.CustomDialer)
	}
	secure, err := Config{CAFile: writeCA(t)}.Decide("nats://10.0.0.5:4222")
	if err != nil {
		t.Fatal(err)
	}
	if o := apply(t, secure.Options(nil, 0)); !o.Secure || o.TLSConfig == nil || o.TLSConfig.RootCAs == nil {
		t.Fatalf("with a CA: secure %v, tls %+v", o.Secure, o.TLSConfig)
	}
}

func apply(t *testing.T, opts []nats.Option) nats.Options {
	t.Helper()
	o := nats.GetDefaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

// writeCA writes a self-signed CA certificate and returns its path.
func writeCA(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2120, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestErrorEscapesThePeersText: a TLS failure quotes the peer's
// certificate (the names it is valid for), which whoever answers at the
// broker's address chose; the message carries no terminal escapes.
func TestErrorEscapesThePeersText(t *testing.T) {
	peer := "x509: certificate is valid for \x1b]0;owned\a\x1b[2J\x1b[Hall machines OK, not localhost"
	for _, k := range []Kind{KindWrongHost, KindUntrusted, KindInvalid} {
		msg := (&Error{Kind: k, URL: "tls://localhost:4222", Host: "localhost", Err: errors.New(peer)}).Error()
		if strings.ContainsAny(msg, "\x1b\a") {
			t.Errorf("kind %v: message carries raw escapes: %q", k, msg)
		}
		if !strings.Contains(msg, `\x1b]0;owned`) {
			t.Errorf("kind %v: the peer's text is not shown escaped: %q", k, msg)
		}
	}
}
