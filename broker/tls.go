package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/commandcontrol/commandcontrol/internal/natstls"
)

// TLS on the broker's listeners and links.
//
// One certificate (Config.TLS) serves the client port and, as HTTPS, the
// monitoring port, as NATS's own top-level tls block does. Routes and the
// leaf listener use it too unless ClusterTLS or LeafTLS name their own.
// Routes over TLS are always mutual: each broker verifies the other's
// certificate against the CA, both when it dials and when it accepts, so
// the CA that signs route certificates is what admits a broker to the
// cluster. A site verifies its hub against HubTLS.CAFile and, when the hub
// asks for one (LeafTLS.Verify), presents HubTLS's certificate.

// TLSFiles names the PEM files of one TLS setting.
type TLSFiles struct {
	// CertFile and KeyFile are this side's certificate chain and key.
	CertFile string `json:"cert,omitempty"`
	KeyFile  string `json:"key,omitempty"`
	// CAFile holds the CA certificates the other side's certificate must
	// chain to.
	CAFile string `json:"ca,omitempty"`
	// Verify, on a listener, requires every peer to present a certificate
	// signed by CAFile (mutual TLS).
	Verify bool `json:"verify,omitempty"`
}

// IsZero reports whether nothing is set.
func (f TLSFiles) IsZero() bool { return f == TLSFiles{} }

// hasCert reports whether a certificate is configured.
func (f TLSFiles) hasCert() bool { return f.CertFile != "" || f.KeyFile != "" }

// ServerConfig loads the files into a tls.Config for a listener (what is
// the listener for: it names the flags in errors). It needs a certificate;
// with Verify it needs the CA and requires client certificates.
func (f TLSFiles) ServerConfig(what string) (*tls.Config, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, fmt.Errorf("broker: %s TLS needs both a certificate and its key (cert %q, key %q)", what, f.CertFile, f.KeyFile)
	}
	cert, err := natstls.LoadKeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("broker: %s TLS certificate %s / key %s: %v", what, f.CertFile, f.KeyFile, err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if f.CAFile != "" {
		pool, err := loadCAPool(what, f.CAFile)
		if err != nil {
			return nil, err
		}
		// ClientCAs checks peers' certificates when they connect;
		// RootCAs checks the other side when this server dials (routes).
		tc.ClientCAs, tc.RootCAs = pool, pool
	}
	if f.Verify {
		if f.CAFile == "" {
			return nil, fmt.Errorf("broker: %s TLS verification of peers' certificates needs the CA that signs them", what)
		}
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// ClientConfig loads the files into a tls.Config for dialling a server:
// the CA verifies the server (the system's roots without one) and the
// certificate, if any, is presented to it.
func (f TLSFiles) ClientConfig(what string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CAFile != "" {
		pool, err := loadCAPool(what, f.CAFile)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	if f.hasCert() {
		if f.CertFile == "" || f.KeyFile == "" {
			return nil, fmt.Errorf("broker: %s TLS client certificate needs both the certificate and its key (cert %q, key %q)", what, f.CertFile, f.KeyFile)
		}
		cert, err := natstls.LoadKeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("broker: %s TLS certificate %s / key %s: %v", what, f.CertFile, f.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func loadCAPool(what, path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("broker: %s TLS CA: %w", what, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("broker: %s TLS CA %s holds no PEM certificate", what, path)
	}
	return pool, nil
}

// clusterTLS is the TLS setting routes use: ClusterTLS, or else the
// client port's certificate and CA. Routes always verify both ends.
func (c *Config) clusterTLS() TLSFiles {
	f := c.ClusterTLS
	if f.IsZero() && c.TLS.hasCert() {
		f = TLSFiles{CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile, CAFile: c.TLS.CAFile}
	}
	if !f.IsZero() {
		f.Verify = true
	}
	return f
}

// leafTLS is the hub's leaf listener's TLS setting: LeafTLS, or else the
// client port's certificate (without requiring sites' certificates).
func (c *Config) leafTLS() TLSFiles {
	if c.LeafTLS.IsZero() && c.TLS.hasCert() {
		return TLSFiles{CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile, CAFile: c.TLS.CAFile}
	}
	return c.LeafTLS
}

// hubTLS is a site's TLS to its hub: HubTLS, or else the CA of the
// client port's setting (the CA other brokers' certificates chain to).
func (c *Config) hubTLS() TLSFiles {
	if c.HubTLS.IsZero() && c.TLS.CAFile != "" {
		return TLSFiles{CAFile: c.TLS.CAFile}
	}
	return c.HubTLS
}

// tlsOptions puts TLS on every listener and link cfg asks for, and
// refuses a cluster or leaf listener on a non-loopback address that would
// let anyone in or run in clear text.
func tlsOptions(cfg *Config, opts *server.Options) error {
	if !cfg.TLS.IsZero() {
		tc, err := cfg.TLS.ServerConfig("client port (--tls-cert, --tls-key, --tls-ca)")
		if err != nil {
			return err
		}
		opts.TLSConfig, opts.TLS, opts.TLSVerify = tc, true, cfg.TLS.Verify
		if cfg.MonitorListen != "" {
			// Monitoring is served over HTTPS with the same
			// certificate (never asking for a client's).
			opts.HTTPSPort, opts.HTTPPort = opts.HTTPPort, 0
		}
	}
	if err := routeOptions(cfg, opts); err != nil {
		return err
	}
	return leafTLSOptions(cfg, opts)
}

// routeOptions authenticates routes: with the cluster secret every route
// presents it (and it is put into each route URL), with route TLS both
// ends verify each other against the CA.
func routeOptions(cfg *Config, opts *server.Options) error {
	if cfg.ClusterListen == "" {
		if cfg.ClusterSecret != "" || !cfg.ClusterTLS.IsZero() {
			return errors.New("broker: a cluster secret or cluster TLS given without a cluster listen address (--cluster-listen)")
		}
		return nil
	}
	rt := cfg.clusterTLS()
	if !rt.IsZero() {
		if rt.CAFile == "" {
			return errors.New("broker: routes over TLS verify the other brokers' certificates: give the CA that signs them (--tls-ca or --cluster-tls-ca)")
		}
		tc, err := rt.ServerConfig("route (--cluster-tls-cert, --cluster-tls-key, --cluster-tls-ca)")
		if err != nil {
			return err
		}
		opts.Cluster.TLSConfig = tc
		opts.Cluster.TLSTimeout = 2
	}
	if cfg.ClusterSecret != "" {
		opts.Cluster.Username, opts.Cluster.Password = RouteUser, cfg.ClusterSecret
		for _, r := range opts.Routes {
			r.User = url.UserPassword(RouteUser, cfg.ClusterSecret)
		}
	}
	// The secret is required even with route TLS and even on loopback:
	// a certificate from the routes' CA may be a client's or a site
	// broker's (the same CA often signs them), and on a shared host any
	// local user could start a server; either would join the cluster.
	if cfg.ClusterSecret == "" {
		return fmt.Errorf("broker: cluster listen %s has no cluster secret: any server that reaches it (on this host, or with any certificate the CA signed) would join the cluster and act in everyone's name. "+
			"Add --cluster-secret-file FILE (create it with: cc-broker cluster-secret; the same file on every broker), "+
			"and off loopback mutual TLS for routes with --tls-cert, --tls-key and --tls-ca (or --cluster-tls-cert, --cluster-tls-key, --cluster-tls-ca)", cfg.ClusterListen)
	}
	return nil
}

// RouteUser is the user name routes authenticate with the cluster secret.
const RouteUser = "cc-route"

// leafTLSOptions puts TLS on the hub's leaf listener and on a site's
// links to its hub; in clear text either is refused off loopback unless
// AllowPlaintextLeaf.
func leafTLSOptions(cfg *Config, opts *server.Options) error {
	if cfg.LeafListen != "" {
		lt := cfg.leafTLS()
		if !lt.IsZero() {
			tc, err := lt.ServerConfig("leaf listener (--leaf-tls-cert, --leaf-tls-key, --leaf-tls-ca)")
			if err != nil {
				return err
			}
			opts.LeafNode.TLSConfig, opts.LeafNode.TLSTimeout = tc, 2
		} else if !isLoopback(opts.LeafNode.Host) && !cfg.AllowPlaintextLeaf {
			return fmt.Errorf("broker: leaf listen %s is not a loopback address and has no TLS: sites' secrets and all their traffic would cross the network in clear text. "+
				"Add --tls-cert and --tls-key (or --leaf-tls-cert and --leaf-tls-key), or --allow-plaintext-leaf if the link is protected otherwise (a VPN)", cfg.LeafListen)
		}
	} else if !cfg.LeafTLS.IsZero() {
		return errors.New("broker: leaf TLS given without a leaf listen address (--leaf-listen)")
	}
	if cfg.Hub == nil {
		if !cfg.HubTLS.IsZero() {
			return errors.New("broker: hub TLS given without a hub (--hub)")
		}
		return nil
	}
	ht := cfg.hubTLS()
	useTLS := !ht.IsZero()
	for _, r := range opts.LeafNode.Remotes {
		for _, u := range r.URLs {
			if u.Scheme == "tls" {
				useTLS = true
			}
		}
	}
	if !useTLS {
		for _, r := range opts.LeafNode.Remotes {
			for _, u := range r.URLs {
				if !isLoopback(u.Hostname()) && !cfg.AllowPlaintextLeaf {
					return fmt.Errorf("broker: the link to hub %s would run in clear text, the site's secret with it: "+
						"add --hub-tls-ca FILE (the CA that signed the hub's certificate; --tls-ca serves too), or --allow-plaintext-leaf if the link is protected otherwise (a VPN)", u.Host)
				}
			}
		}
		return nil
	}
	tc, err := ht.ClientConfig("hub link (--hub-tls-ca, --hub-tls-cert, --hub-tls-key)")
	if err != nil {
		return err
	}
	for _, r := range opts.LeafNode.Remotes {
		r.TLS, r.TLSConfig, r.TLSTimeout = true, tc.Clone(), 2
	}
	return nil
}

// isLoopback reports whether host (an IP or a name) is only reachable
// from this machine; "" and 0.0.0.0 (every interface) are not.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// securityWarnings lists what cfg leaves open that is allowed but worth
// saying at start.
func securityWarnings(cfg *Config, opts *server.Options) []string {
	var w []string
	if opts.TLSConfig == nil && !isLoopback(opts.Host) {
		w = append(w, fmt.Sprintf("client port %s is not loopback and has no TLS: agents' and operators' traffic crosses the network in clear text (add --tls-cert and --tls-key)", cfg.Listen))
	}
	if cfg.MonitorListen != "" && !isLoopback(opts.HTTPHost) {
		how := "over plain HTTP"
		if opts.TLSConfig != nil {
			how = "over HTTPS but without authentication"
		}
		w = append(w, fmt.Sprintf("monitoring %s is not loopback and is served %s: anyone who reaches it reads every connection's name, address and subscriptions (listen on 127.0.0.1, or put an authenticating proxy in front)", cfg.MonitorListen, how))
	}
	if cfg.ClusterListen != "" && opts.Cluster.TLSConfig == nil && !isLoopback(opts.Cluster.Host) {
		w = append(w, fmt.Sprintf("routes on %s run in clear text: the cluster secret crosses the network, and a host that takes over a listed route's address is let in (add --tls-cert, --tls-key and --tls-ca for mutual TLS)", cfg.ClusterListen))
	}
	if cfg.AllowPlaintextLeaf && ((cfg.LeafListen != "" && opts.LeafNode.TLSConfig == nil) || (cfg.Hub != nil && cfg.hubTLS().IsZero())) {
		w = append(w, "leaf links run in clear text (--allow-plaintext-leaf): sites' secrets cross the network unencrypted")
	}
	if s := websocketWarning(cfg, opts); s != "" {
		w = append(w, s)
	}
	return w
}
