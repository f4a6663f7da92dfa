// Command cc-broker runs the commandcontrol broker alone (an embedded NATS
// server with the accounts and auth callout wiring), for deployments where
// the broker and the control service run apart, in a cluster, or as a leaf
// node hub. The control service writes the keys it needs to
// <data>/broker-auth.json.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/internal/logging"
	"github.com/commandcontrol/commandcontrol/internal/termsafe"
)

// fileConfig is the --config file: JSON with any of these fields; flags
// given on the command line win.
type fileConfig struct {
	Listen        string   `json:"listen"`
	Name          string   `json:"name"`
	Auth          string   `json:"auth"`
	ClusterName   string   `json:"cluster_name"`
	ClusterListen string   `json:"cluster_listen"`
	Routes        []string `json:"routes"`
	LeafListen    string   `json:"leaf_listen"`
	MonitorListen string   `json:"monitor_listen"`
	PingInterval  string   `json:"ping_interval"`
	MaxPingsOut   int      `json:"max_pings_out"`
	MaxPayload    int32    `json:"max_payload"`
	StoreDir      string   `json:"store_dir"`
	// A hub lists the sites it accepts: inline, or in a file of their own.
	LeafSites     []broker.LeafSite `json:"leaf_sites"`
	LeafSitesFile string            `json:"leaf_sites_file"`
	// A site names its hub.
	Hub *hubConfig `json:"hub"`
	// TLS: the client port's (and by default every listener's)
	// certificate; routes' and the leaf listener's own when set.
	TLS                TLSFiles `json:"tls"`
	ClusterTLS         TLSFiles `json:"cluster_tls"`
	LeafTLS            TLSFiles `json:"leaf_tls"`
	ClusterSecretFile  string   `json:"cluster_secret_file"`
	AllowPlaintextLeaf bool     `json:"allow_plaintext_leaf"`
}

// TLSFiles is a "tls" object of the config file: cert, key, ca, verify.
type TLSFiles = broker.TLSFiles

// hubConfig is a site broker's link to its hub.
type hubConfig struct {
	URLs       []string `json:"urls"`
	Site       string   `json:"site"`
	SecretFile string   `json:"secret_file"`
	// TLS verifies the hub (ca) and holds the site's certificate (cert,
	// key) for a hub that asks for one.
	TLS TLSFiles `json:"tls"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "cc-broker:", termsafe.Text(err.Error()))
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "leaf-site" {
		return leafSite(args[1:], os.Stdout, stderr)
	}
	if len(args) > 0 && args[0] == "cluster-secret" {
		return clusterSecret(args[1:], os.Stdout, stderr)
	}
	cfg, lf, err := parse(args, stderr)
	if err != nil {
		return err
	}
	log, err := lf.New(stderr)
	if err != nil {
		return err
	}
	cfg.Logger = log
	b, err := broker.New(*cfg)
	if err != nil {
		return err
	}
	attrs := []any{"listen", cfg.Listen, "tls", b.TLSRequired(), "cluster", cfg.ClusterListen, "leaf", cfg.LeafListen, "store_dir", cfg.StoreDir}
	if len(cfg.LeafSites) > 0 {
		var names []string
		for _, s := range cfg.LeafSites {
			names = append(names, s.Name)
		}
		attrs = append(attrs, "leaf_sites", strings.Join(names, ","))
	}
	if cfg.Hub != nil {
		attrs = append(attrs, "site", cfg.Hub.Site, "hub", strings.Join(cfg.Hub.URLs, ","))
	}
	log.Info("broker starting", attrs...)
	return b.Run(ctx)
}

func parse(args []string, stderr io.Writer) (*broker.Config, *logging.Flags, error) {
	var fc fileConfig
	var configFile, routes, ping string
	lf := &logging.Flags{}
	fs := flag.NewFlagSet("cc-broker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: cc-broker --auth FILE [flags]
       cc-broker leaf-site NAME [--secret-out FILE]
       cc-broker cluster-secret [--secret-out FILE]

Runs the commandcontrol broker alone. Point it at the broker-auth.json the
control service writes into its data directory, then start the control
service with --broker:

  cc-broker --auth cc-data/broker-auth.json --listen 0.0.0.0:4222
  cc-control --data cc-data --broker nats://127.0.0.1:4222

A remote site joins through a leaf node: create the site on the hub side
(cc-broker leaf-site dc2 prints what goes where), start the hub with
--leaf-listen and --leaf-sites (and the control service behind it with
the same --leaf-sites: it authorises the sites' links), and the site's
broker with --hub, --site and --site-secret-file. Agents at the site,
registered to it (cc-bench machines add … --site NAME), connect to the
site's broker.

TLS: --tls-cert and --tls-key serve the client port over TLS, monitoring
over HTTPS, and (unless --cluster-tls-* or --leaf-tls-* name their own)
routes and the leaf listener. --tls-ca is the CA other brokers' (and, with
--tls-verify, clients') certificates must chain to.

A cluster: every broker gets the same secret (cc-broker cluster-secret
writes one) with --cluster-secret-file, and routes run over mutual TLS
(--tls-cert, --tls-key, --tls-ca: each broker verifies the other). A
cluster listener is refused without the secret (on loopback too), and a
leaf listener on a non-loopback address without TLS.

Flags:
`)
		fs.PrintDefaults()
	}
	var hubURLs string
	var hubTLS TLSFiles
	hub := &hubConfig{}
	fs.StringVar(&configFile, "config", "", "JSON config file (fields: listen, name, auth, cluster_name, cluster_listen, routes, leaf_listen, leaf_sites, leaf_sites_file, hub {urls, site, secret_file, tls {ca, cert, key}}, monitor_listen, ping_interval, max_pings_out, max_payload, store_dir, tls {cert, key, ca, verify}, cluster_secret_file, cluster_tls {cert, key, ca}, leaf_tls {cert, key, ca, verify}, allow_plaintext_leaf)")
	fs.StringVar(&fc.Auth, "auth", "", "the control service's broker-auth.json (required)")
	fs.StringVar(&fc.Listen, "listen", "127.0.0.1:4222", "client listen address HOST:PORT")
	fs.StringVar(&fc.Name, "name", "", "server name")
	fs.StringVar(&fc.ClusterName, "cluster-name", "commandcontrol", "cluster name")
	fs.StringVar(&fc.ClusterListen, "cluster-listen", "", "listen for cluster routes on HOST:PORT")
	fs.StringVar(&routes, "routes", "", "comma-separated routes to other brokers (nats-route://host:port)")
	fs.StringVar(&fc.LeafListen, "leaf-listen", "", "hub: accept remote sites' leaf-node connections on HOST:PORT (needs --leaf-sites)")
	fs.StringVar(&fc.LeafSitesFile, "leaf-sites", "", "hub: JSON file listing the sites it accepts, [{\"site\": NAME, \"secret_sha256\": HEX}] (cc-broker leaf-site NAME prints an entry)")
	fs.StringVar(&hubURLs, "hub", "", "site: comma-separated leaf URLs of the hub (nats-leaf://hub.example:7422)")
	fs.StringVar(&hub.Site, "site", "", "site: this site's name, as the hub lists it")
	fs.StringVar(&hub.SecretFile, "site-secret-file", "", "site: the file cc-broker leaf-site wrote the site's secret to (mode 0600)")
	fs.StringVar(&fc.MonitorListen, "monitor-listen", "", "serve NATS monitoring on HOST:PORT (HTTPS with --tls-cert)")
	fs.StringVar(&fc.TLS.CertFile, "tls-cert", "", "TLS: this broker's certificate (PEM) for the client port, HTTPS monitoring, and routes and the leaf listener unless --cluster-tls-cert/--leaf-tls-cert")
	fs.StringVar(&fc.TLS.KeyFile, "tls-key", "", "TLS: the key of --tls-cert (PEM)")
	fs.StringVar(&fc.TLS.CAFile, "tls-ca", "", "TLS: CA (PEM) that other brokers' certificates (routes are mutual TLS) and, with --tls-verify, clients' certificates must chain to")
	fs.BoolVar(&fc.TLS.Verify, "tls-verify", false, "TLS: require every client to present a certificate signed by --tls-ca (mutual TLS on the client port)")
	fs.StringVar(&fc.ClusterSecretFile, "cluster-secret-file", "", "routes: file with the cluster secret every route must present, the same on every broker (cc-broker cluster-secret writes one, mode 0600)")
	fs.StringVar(&fc.ClusterTLS.CertFile, "cluster-tls-cert", "", "routes: certificate for routes, if not --tls-cert (it must allow client and server use)")
	fs.StringVar(&fc.ClusterTLS.KeyFile, "cluster-tls-key", "", "routes: the key of --cluster-tls-cert")
	fs.StringVar(&fc.ClusterTLS.CAFile, "cluster-tls-ca", "", "routes: CA the other brokers' route certificates must chain to, if not --tls-ca (best: a CA that signs brokers only)")
	fs.StringVar(&fc.LeafTLS.CertFile, "leaf-tls-cert", "", "hub: certificate for the leaf listener, if not --tls-cert")
	fs.StringVar(&fc.LeafTLS.KeyFile, "leaf-tls-key", "", "hub: the key of --leaf-tls-cert")
	fs.StringVar(&fc.LeafTLS.CAFile, "leaf-tls-ca", "", "hub: CA the sites' certificates must chain to (with --leaf-tls-verify)")
	fs.BoolVar(&fc.LeafTLS.Verify, "leaf-tls-verify", false, "hub: require every site to present a certificate signed by --leaf-tls-ca (mutual TLS on leaf links)")
	fs.StringVar(&hubTLS.CAFile, "hub-tls-ca", "", "site: CA (PEM) the hub's certificate must chain to, if not --tls-ca; the link to the hub runs over TLS")
	fs.StringVar(&hubTLS.CertFile, "hub-tls-cert", "", "site: certificate to present to a hub that requires one (--leaf-tls-verify there)")
	fs.StringVar(&hubTLS.KeyFile, "hub-tls-key", "", "site: the key of --hub-tls-cert")
	fs.BoolVar(&fc.AllowPlaintextLeaf, "allow-plaintext-leaf", false, "let a leaf listener or the link to a hub on a non-loopback address run without TLS (only inside a VPN or similar: the site's secret crosses in clear text)")
	fs.StringVar(&ping, "ping-interval", broker.DefaultPingInterval.String(), "ping interval; a silent client is dropped after (max-pings-out+1) intervals")
	fs.IntVar(&fc.MaxPingsOut, "max-pings-out", broker.DefaultMaxPingsOut, "unanswered pings before a client is dropped")
	fs.Func("max-payload", "largest message in bytes (default 1 MiB); a hub with a remote site of more than about 6,000 machines needs more (the site link's permissions are one message)", func(v string) error {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 1024 {
			return fmt.Errorf("want a number of bytes of at least 1024, e.g. 4194304")
		}
		fc.MaxPayload = int32(n)
		return nil
	})
	fs.StringVar(&fc.StoreDir, "store-dir", "", "JetStream file storage for the CONTROL account only, where cc-control keeps its durable audit log (e.g. /var/lib/cc-broker/jetstream); without it the audit log is not durable")
	lf.Register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if hubURLs != "" || hub.Site != "" || hub.SecretFile != "" {
		hub.URLs = splitComma(hubURLs)
		fc.Hub = hub
	}
	if configFile != "" {
		if err := mergeFile(configFile, &fc, &routes, &ping, set); err != nil {
			return nil, nil, err
		}
	}
	if fc.Auth == "" {
		return nil, nil, errors.New("--auth FILE is required: the broker-auth.json that cc-control writes into its data directory")
	}
	auth, err := broker.LoadAuthKeys(fc.Auth)
	if err != nil {
		return nil, nil, err
	}
	pi, err := time.ParseDuration(ping)
	if err != nil {
		return nil, nil, fmt.Errorf("ping interval %q: %v (e.g. 10s)", ping, err)
	}
	cfg := &broker.Config{
		Listen: fc.Listen, Name: fc.Name, Auth: auth, ClusterName: fc.ClusterName, ClusterListen: fc.ClusterListen,
		LeafListen: fc.LeafListen, MonitorListen: fc.MonitorListen, PingInterval: pi, MaxPingsOut: fc.MaxPingsOut, MaxPayload: fc.MaxPayload,
		StoreDir: fc.StoreDir, TLS: fc.TLS, ClusterTLS: fc.ClusterTLS, LeafTLS: fc.LeafTLS, AllowPlaintextLeaf: fc.AllowPlaintextLeaf,
	}
	if fc.ClusterSecretFile != "" {
		if cfg.ClusterSecret, err = broker.ReadClusterSecret(fc.ClusterSecretFile); err != nil {
			return nil, nil, err
		}
	}
	cfg.Routes = splitComma(routes)
	cfg.LeafSites = fc.LeafSites
	if fc.LeafSitesFile != "" {
		sites, err := broker.LoadLeafSites(fc.LeafSitesFile)
		if err != nil {
			return nil, nil, err
		}
		cfg.LeafSites = append(cfg.LeafSites, sites...)
	}
	if h := fc.Hub; h != nil {
		switch {
		case len(h.URLs) == 0:
			return nil, nil, errors.New("a site needs its hub's leaf URL: --hub nats-leaf://HUB:7422")
		case h.Site == "":
			return nil, nil, errors.New("a site needs its name: --site NAME (as the hub's leaf sites list it)")
		case h.SecretFile == "":
			return nil, nil, errors.New("a site needs its secret: --site-secret-file FILE (written by cc-broker leaf-site NAME)")
		}
		secret, err := broker.ReadLeafSecret(h.SecretFile)
		if err != nil {
			return nil, nil, err
		}
		cfg.Hub = &broker.LeafHub{URLs: h.URLs, Site: h.Site, Secret: secret}
		cfg.HubTLS = h.TLS
	}
	if set["hub-tls-ca"] || set["hub-tls-cert"] || set["hub-tls-key"] {
		if cfg.Hub == nil {
			return nil, nil, errors.New("--hub-tls-ca, --hub-tls-cert and --hub-tls-key are for a site's link to its hub: give --hub, --site and --site-secret-file too")
		}
		if set["hub-tls-ca"] {
			cfg.HubTLS.CAFile = hubTLS.CAFile
		}
		if set["hub-tls-cert"] {
			cfg.HubTLS.CertFile = hubTLS.CertFile
		}
		if set["hub-tls-key"] {
			cfg.HubTLS.KeyFile = hubTLS.KeyFile
		}
	}
	return cfg, lf, nil
}

func splitComma(s string) []string {
	var out []string
	for _, r := range strings.Split(s, ",") {
		if r = strings.TrimSpace(r); r != "" {
			out = append(out, r)
		}
	}
	return out
}

// mergeFile fills every option not given as a flag from the config file.
func mergeFile(path string, fc *fileConfig, routes, ping *string, set map[string]bool) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var f fileConfig
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	pick := func(flagName string, dst *string, v string) {
		if !set[flagName] && v != "" {
			*dst = v
		}
	}
	pick("auth", &fc.Auth, f.Auth)
	pick("listen", &fc.Listen, f.Listen)
	pick("name", &fc.Name, f.Name)
	pick("cluster-name", &fc.ClusterName, f.ClusterName)
	pick("cluster-listen", &fc.ClusterListen, f.ClusterListen)
	pick("leaf-listen", &fc.LeafListen, f.LeafListen)
	pick("monitor-listen", &fc.MonitorListen, f.MonitorListen)
	pick("ping-interval", ping, f.PingInterval)
	pick("routes", routes, strings.Join(f.Routes, ","))
	pick("store-dir", &fc.StoreDir, f.StoreDir)
	pick("leaf-sites", &fc.LeafSitesFile, f.LeafSitesFile)
	fc.LeafSites = f.LeafSites
	if f.Hub != nil {
		if fc.Hub == nil {
			fc.Hub = &hubConfig{}
		}
		if !set["hub"] {
			fc.Hub.URLs = f.Hub.URLs
		}
		pick("site", &fc.Hub.Site, f.Hub.Site)
		pick("site-secret-file", &fc.Hub.SecretFile, f.Hub.SecretFile)
		fc.Hub.TLS = f.Hub.TLS
	}
	pick("cluster-secret-file", &fc.ClusterSecretFile, f.ClusterSecretFile)
	for _, t := range []struct {
		prefix   string
		dst, src *TLSFiles
	}{{"tls", &fc.TLS, &f.TLS}, {"cluster-tls", &fc.ClusterTLS, &f.ClusterTLS}, {"leaf-tls", &fc.LeafTLS, &f.LeafTLS}} {
		pick(t.prefix+"-cert", &t.dst.CertFile, t.src.CertFile)
		pick(t.prefix+"-key", &t.dst.KeyFile, t.src.KeyFile)
		pick(t.prefix+"-ca", &t.dst.CAFile, t.src.CAFile)
		if !set[t.prefix+"-verify"] && t.src.Verify {
			t.dst.Verify = true
		}
	}
	if !set["allow-plaintext-leaf"] && f.AllowPlaintextLeaf {
		fc.AllowPlaintextLeaf = true
	}
	if !set["max-payload"] && f.MaxPayload > 0 {
		fc.MaxPayload = f.MaxPayload
	}
	if !set["max-pings-out"] && f.MaxPingsOut > 0 {
		fc.MaxPingsOut = f.MaxPingsOut
	}
	return nil
}
