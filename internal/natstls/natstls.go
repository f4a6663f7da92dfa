// Package natstls decides, in one place for every client that dials a
// broker (the agent, the bench SDK and cc-bench, cc-control with an
// external broker), how the connection is made: TLS verified against the
// CA the operator names, or plain text — which is allowed to this host's
// own addresses (loopback) so the quick start works, and anywhere else
// only when the operator says so explicitly.
package natstls

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Config is how a client may reach its brokers.
type Config struct {
	// CAFile is a PEM file of the CA(s) that signed the broker's
	// certificate; it turns TLS on. Without it a tls:// URL verifies
	// against the system's roots.
	CAFile string
	// CertFile and KeyFile are a client certificate (PEM) for a broker
	// that requires mutual TLS; they turn TLS on.
	CertFile, KeyFile string
	// TLS is a ready configuration (the SDK's); it turns TLS on. CAFile
	// and CertFile are added to a copy.
	TLS *tls.Config
	// AllowPlaintext permits plain text to an address off this host.
	AllowPlaintext bool
	// Names spell the settings above in error messages (zero: [Flags]).
	Names Names
}

// Names are how a client's user spells the settings, for advice in errors.
type Names struct {
	CA, Cert, Plaintext string
}

// Flags are the command-line spellings cc-agent and cc-bench use.
var Flags = Names{CA: "--tls-ca FILE", Cert: "--tls-cert FILE --tls-key FILE", Plaintext: "--allow-plaintext"}

// Decision is what [Config.Decide] concluded for one URL list.
type Decision struct {
	// Secure: every connection is TLS.
	Secure bool
	// TLS is the client's TLS configuration (nil in plain text).
	TLS *tls.Config
	// guard: plain text, allowed only because every URL is on this
	// host; dials elsewhere (servers a cluster advertises) are refused.
	guard bool
	names Names
	ca    string
}

// Decide checks urls (nats.go's form: comma-separated, scheme optional)
// against c and loads the TLS files. Connections are TLS when a CA, a
// client certificate or a TLS configuration is given, or any URL is
// tls:// or wss:// (nats.go then uses TLS for the whole list). Otherwise
// every URL must be loopback, or AllowPlaintext set: the error names the
// first URL that is not and says what to add.
func (c Config) Decide(urls string) (*Decision, error) {
	names := c.names()
	list, err := Parse(urls)
	if err != nil {
		return nil, err
	}
	d := &Decision{names: names, ca: c.CAFile}
	d.Secure = c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" || c.TLS != nil
	for _, u := range list {
		d.Secure = d.Secure || u.Scheme == "tls" || u.Scheme == "wss"
	}
	if d.Secure {
		if d.TLS, err = c.tlsConfig(); err != nil {
			return nil, err
		}
		return d, nil
	}
	if c.AllowPlaintext {
		return d, nil
	}
	for _, u := range list {
		if !Loopback(u.Hostname()) {
			return nil, &Error{Kind: KindPlaintext, URL: u.Redacted(), Host: u.Hostname(), Names: names}
		}
	}
	d.guard = true
	return d, nil
}

func (c Config) names() Names {
	if c.Names == (Names{}) {
		return Flags
	}
	return c.Names
}

// tlsConfig builds the client's TLS configuration from c.
func (c Config) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.TLS != nil {
		cfg = c.TLS.Clone()
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("the broker's CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("the broker's CA file %s holds no PEM certificate (want the CA certificate that signed the broker's: -----BEGIN CERTIFICATE-----)", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, fmt.Errorf("a client certificate needs both its certificate file and its key file (got certificate %q, key %q)", c.CertFile, c.KeyFile)
	}
	if c.CertFile != "" {
		cert, err := LoadKeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s with key %s: %w", c.CertFile, c.KeyFile, err)
		}
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	return cfg, nil
}

// Options carry the decision out: TLS with the configured verification,
// or, for plain text on loopback, a dialer that refuses addresses off
// this host — nats.go adds the servers a cluster advertises to its pool,
// and those may be anywhere. dial is the caller's dialer (nil: a
// net.Dialer bounded by timeout).
func (d *Decision) Options(dial nats.CustomDialer, timeout time.Duration) []nats.Option {
	var opts []nats.Option
	if d.Secure {
		opts = append(opts, nats.Secure(d.TLS))
	}
	if dial == nil && d.guard {
		dial = &net.Dialer{Timeout: timeout}
	}
	if d.guard {
		dial = &guardDialer{d: dial, names: d.names}
	}
	if dial != nil {
		opts = append(opts, nats.SetCustomDialer(dial))
	}
	return opts
}

type guardDialer struct {
	d     nats.CustomDialer
	names Names
}

// Dial implements nats.CustomDialer.
func (g *guardDialer) Dial(network, address string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		host = address
	}
	if !Loopback(host) {
		return nil, &Error{Kind: KindPlaintext, URL: "nats://" + address, Host: host, Names: g.names}
	}
	return g.d.Dial(network, address)
}

// Parse splits urls as nats.go does (comma-separated, blanks ignored, no
// scheme meaning nats://; empty: nats.DefaultURL) and parses each.
func Parse(urls string) ([]*url.URL, error) {
	var out []*url.URL
	for _, s := range strings.Split(urls, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		full := s
		if !strings.Contains(s, "://") {
			full = "nats://" + s
		}
		u, err := url.Parse(full)
		if err != nil {
			return nil, fmt.Errorf("broker URL %q: %w (want e.g. tls://broker.example:4222)", s, err)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return nil, fmt.Errorf("broker URL %q: scheme %q: want nats://, tls://, ws:// or wss://", s, u.Scheme)
		}
		if u.Hostname() == "" {
			return nil, fmt.Errorf("broker URL %q has no host (want e.g. tls://broker.example:4222)", s)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return Parse(nats.DefaultURL)
	}
	return out, nil
}

// Loopback reports whether host (a name or an address, without port) is
// this host by construction: "localhost", an address in 127.0.0.0/8, ::1,
// or the unspecified address (0.0.0.0, ::), which a dial reaches on this
// host. Other names are not resolved: a resolver may lie.
func Loopback(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	if err != nil {
		return false
	}
	a = a.WithZone("").Unmap()
	return a.IsLoopback() || a.IsUnspecified()
}
