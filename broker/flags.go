package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/internal/cli"
)

// Flags are a broker's command-line flags and its --config file: cc-broker
// takes them, and cc-control takes them for its embedded broker, so both
// spell, document and merge them alike. Register them on a flag set, parse
// it, then build the Config; flags given on the command line win over the
// file.
type Flags struct {
	// Standalone adds what only a broker running apart from the control
	// service needs: --auth (the control service's broker-auth.json) and
	// a site's link to its hub (--hub, --site, --site-secret-file,
	// --hub-tls-*). An embedded broker gets its keys from the control
	// service, and the control service runs behind the hub, never at a
	// site.
	Standalone bool

	fs         *flag.FlagSet
	configFile string
	fc         fileConfig
	routes     string
	hubURLs    string
	wsOrigins  string
	hub        hubConfig
	hubTLS     TLSFiles
	ping       durationFlag
}

// fileConfig is the --config file: JSON with any of these fields.
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
	LeafSites     []LeafSite `json:"leaf_sites"`
	LeafSitesFile string     `json:"leaf_sites_file"`
	// A site names its hub.
	Hub *hubConfig `json:"hub"`
	// TLS: the client port's (and by default every listener's)
	// certificate; routes' and the leaf listener's own when set.
	TLS                TLSFiles `json:"tls"`
	ClusterTLS         TLSFiles `json:"cluster_tls"`
	LeafTLS            TLSFiles `json:"leaf_tls"`
	ClusterSecretFile  string   `json:"cluster_secret_file"`
	AllowPlaintextLeaf bool     `json:"allow_plaintext_leaf"`
	// WebSocket: NATS over WebSocket for sessions (see websocket.go).
	WebSocketListen         string   `json:"websocket_listen"`
	WebSocketOrigins        []string `json:"websocket_origins"`
	AllowPlaintextWebSocket bool     `json:"allow_plaintext_websocket"`
}

// hubConfig is a site broker's link to its hub.
type hubConfig struct {
	URLs       []string `json:"urls"`
	Site       string   `json:"site"`
	SecretFile string   `json:"secret_file"`
	// TLS verifies the hub (ca) and holds the site's certificate (cert,
	// key) for a hub that asks for one.
	TLS TLSFiles `json:"tls"`
}

// configFields lists the --config file's fields for its flag's help.
func (f *Flags) configFields() string {
	fields := "listen, name, cluster_name, cluster_listen, routes, leaf_listen, leaf_sites, leaf_sites_file, monitor_listen, ping_interval, max_pings_out, max_payload, store_dir, tls {cert, key, ca, verify}, cluster_secret_file, cluster_tls {cert, key, ca}, leaf_tls {cert, key, ca, verify}, allow_plaintext_leaf, websocket_listen, websocket_origins, allow_plaintext_websocket"
	if f.Standalone {
		fields = "auth, " + fields + ", hub {urls, site, secret_file, tls {ca, cert, key}}"
	}
	return fields
}

// Register adds the broker's flags to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	f.fs = fs
	fc := &f.fc
	f.ping = durationFlag(DefaultPingInterval)
	fs.StringVar(&f.configFile, "config", "", "broker: JSON config `FILE` (fields: "+f.configFields()+"); flags given win over it")
	if f.Standalone {
		fs.StringVar(&fc.Auth, "auth", "", "the control service's broker-auth.json (required)")
	}
	fs.StringVar(&fc.Listen, "listen", "127.0.0.1:4222", "broker: client listen address HOST:PORT")
	fs.StringVar(&fc.Name, "name", "", "broker: server name")
	fs.StringVar(&fc.ClusterName, "cluster-name", "commandcontrol", "broker: cluster name")
	fs.StringVar(&fc.ClusterListen, "cluster-listen", "", "broker: listen for cluster routes on HOST:PORT")
	fs.StringVar(&f.routes, "routes", "", "broker: comma-separated routes to other brokers (nats-route://host:port)")
	fs.StringVar(&fc.LeafListen, "leaf-listen", "", "hub: accept remote sites' leaf-node connections on HOST:PORT (needs --leaf-sites)")
	fs.StringVar(&fc.LeafSitesFile, "leaf-sites", "", "hub: JSON file listing the remote sites it accepts, [{\"site\": NAME, \"secret_sha256\": HEX}] (cc-broker leaf-site NAME prints an entry); the control service authorises the sites' links from it, so behind a cc-broker hub give cc-control the hub's file")
	if f.Standalone {
		fs.StringVar(&f.hubURLs, "hub", "", "site: comma-separated leaf URLs of the hub (nats-leaf://hub.example:7422)")
		fs.StringVar(&f.hub.Site, "site", "", "site: this site's name, as the hub lists it")
		fs.StringVar(&f.hub.SecretFile, "site-secret-file", "", "site: the file cc-broker leaf-site wrote the site's secret to (mode 0600)")
		fs.StringVar(&f.hubTLS.CAFile, "hub-tls-ca", "", "site: CA (PEM) the hub's certificate must chain to, if not --tls-ca; the link to the hub runs over TLS")
		fs.StringVar(&f.hubTLS.CertFile, "hub-tls-cert", "", "site: certificate to present to a hub that requires one (--leaf-tls-verify there)")
		fs.StringVar(&f.hubTLS.KeyFile, "hub-tls-key", "", "site: the key of --hub-tls-cert")
	}
	fs.StringVar(&fc.MonitorListen, "monitor-listen", "", "broker: serve NATS monitoring on HOST:PORT (HTTPS with --tls-cert)")
	fs.StringVar(&fc.TLS.CertFile, "tls-cert", "", "TLS: the broker's certificate (PEM) for the client port, HTTPS monitoring, and routes and the leaf listener unless --cluster-tls-cert/--leaf-tls-cert")
	fs.StringVar(&fc.TLS.KeyFile, "tls-key", "", "TLS: the key of --tls-cert (PEM)")
	fs.StringVar(&fc.TLS.CAFile, "tls-ca", "", "TLS: CA (PEM) that other brokers' certificates (routes are mutual TLS) and, with --tls-verify, clients' certificates must chain to")
	fs.BoolVar(&fc.TLS.Verify, "tls-verify", false, "TLS: require every client to present a certificate signed by --tls-ca (mutual TLS on the client port)")
	fs.StringVar(&fc.ClusterSecretFile, "cluster-secret-file", "", "routes: file with the cluster secret every route must present, the same on every broker (cc-broker cluster-secret writes one, mode 0600); every --cluster-listen needs it, and off loopback route TLS as well")
	fs.StringVar(&fc.ClusterTLS.CertFile, "cluster-tls-cert", "", "routes: certificate for routes, if not --tls-cert (it must allow client and server use)")
	fs.StringVar(&fc.ClusterTLS.KeyFile, "cluster-tls-key", "", "routes: the key of --cluster-tls-cert")
	fs.StringVar(&fc.ClusterTLS.CAFile, "cluster-tls-ca", "", "routes: CA the other brokers' route certificates must chain to, if not --tls-ca (best: a CA that signs brokers only)")
	fs.StringVar(&fc.LeafTLS.CertFile, "leaf-tls-cert", "", "hub: certificate for the leaf listener, if not --tls-cert")
	fs.StringVar(&fc.LeafTLS.KeyFile, "leaf-tls-key", "", "hub: the key of --leaf-tls-cert")
	fs.StringVar(&fc.LeafTLS.CAFile, "leaf-tls-ca", "", "hub: CA the sites' certificates must chain to (with --leaf-tls-verify)")
	fs.BoolVar(&fc.LeafTLS.Verify, "leaf-tls-verify", false, "hub: require every site to present a certificate signed by --leaf-tls-ca (mutual TLS on leaf links)")
	fs.BoolVar(&fc.AllowPlaintextLeaf, "allow-plaintext-leaf", false, "let a leaf listener or the link to a hub on a non-loopback address run without TLS (only inside a VPN or similar: the site's secret crosses in clear text)")
	fs.StringVar(&fc.WebSocketListen, "websocket-listen", "", "WebSocket: serve NATS over WebSocket on `HOST:PORT` for browsers, apps and devices (sessions), admitted by the same auth callout as the client port; wss:// with --tls-cert, plain ws:// only on loopback unless --allow-plaintext-websocket")
	fs.StringVar(&f.wsOrigins, "websocket-origins", "", "WebSocket: comma-separated `ORIGINS` (https://app.example.com) whose web pages may connect from a browser; without it any page may")
	fs.BoolVar(&fc.AllowPlaintextWebSocket, "allow-plaintext-websocket", false, "WebSocket: let --websocket-listen on a non-loopback address run without TLS (only behind a proxy that ends TLS: sessions' traffic crosses in clear text)")
	fs.Var(&f.ping, "ping-interval", "broker: ping interval; a silently dead client is dropped within (max-pings-out+2) intervals of its last word (the server skips its ping to a client it heard from within one)")
	fs.IntVar(&fc.MaxPingsOut, "max-pings-out", DefaultMaxPingsOut, "broker: unanswered pings before a client is dropped")
	fs.Func("max-payload", "broker: largest message in bytes (default 1 MiB); a hub with a remote site of more than about 6,000 machines needs more (the site link's permissions are one message)", func(v string) error {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < MinMaxPayload {
			return fmt.Errorf("want a number of bytes of at least %d, e.g. 4194304", MinMaxPayload)
		}
		fc.MaxPayload = int32(n)
		return nil
	})
	fs.StringVar(&fc.StoreDir, "store-dir", "", "broker: JetStream file storage for the CONTROL account only, where cc-control keeps its durable audit log (e.g. /var/lib/cc-broker/jetstream); cc-control's embedded broker uses <data>/jetstream unless clustered, cc-broker none: without it the audit log is not durable")
}

// durationFlag is --ping-interval: a duration, whose parse error names it.
type durationFlag time.Duration

func (d *durationFlag) String() string { return time.Duration(*d).String() }

func (d *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("ping interval %q: %v (e.g. 10s)", s, err)
	}
	*d = durationFlag(v)
	return nil
}

// Config builds the broker's Config from the parsed flags, the --config
// file, and the files they name (broker-auth.json, leaf sites, the cluster
// and site secrets). Logger and Debug are left to the caller.
func (f *Flags) Config() (Config, error) {
	if f.fs == nil || !f.fs.Parsed() {
		return Config{}, errors.New("broker: Flags.Config before the flags were registered and parsed")
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	fc := f.fc
	fc.Routes = cli.SplitList(f.routes)
	fc.WebSocketOrigins = cli.SplitList(f.wsOrigins)
	fc.PingInterval = f.ping.String()
	if f.hubURLs != "" || f.hub.Site != "" || f.hub.SecretFile != "" {
		hub := f.hub
		hub.URLs = cli.SplitList(f.hubURLs)
		fc.Hub = &hub
	}
	if f.configFile != "" {
		if err := f.mergeFile(&fc, set); err != nil {
			return Config{}, err
		}
	}
	var cfg Config
	if f.Standalone {
		if fc.Auth == "" {
			return cfg, errors.New("--auth FILE is required: the broker-auth.json that cc-control writes into its data directory")
		}
		auth, err := LoadAuthKeys(fc.Auth)
		if err != nil {
			return cfg, err
		}
		cfg.Auth = auth
	}
	pi, err := time.ParseDuration(fc.PingInterval)
	if err != nil {
		return cfg, fmt.Errorf("ping interval %q: %v (e.g. 10s)", fc.PingInterval, err)
	}
	cfg.Listen, cfg.Name, cfg.ClusterName, cfg.ClusterListen = fc.Listen, fc.Name, fc.ClusterName, fc.ClusterListen
	cfg.Routes, cfg.LeafListen, cfg.MonitorListen = fc.Routes, fc.LeafListen, fc.MonitorListen
	cfg.PingInterval, cfg.MaxPingsOut, cfg.MaxPayload, cfg.StoreDir = pi, fc.MaxPingsOut, fc.MaxPayload, fc.StoreDir
	cfg.TLS, cfg.ClusterTLS, cfg.LeafTLS, cfg.AllowPlaintextLeaf = fc.TLS, fc.ClusterTLS, fc.LeafTLS, fc.AllowPlaintextLeaf
	cfg.WebSocketListen, cfg.WebSocketOrigins, cfg.AllowPlaintextWebSocket = fc.WebSocketListen, fc.WebSocketOrigins, fc.AllowPlaintextWebSocket
	if fc.ClusterSecretFile != "" {
		if cfg.ClusterSecret, err = ReadClusterSecret(fc.ClusterSecretFile); err != nil {
			return cfg, err
		}
	}
	cfg.LeafSites = fc.LeafSites
	if fc.LeafSitesFile != "" {
		sites, err := LoadLeafSites(fc.LeafSitesFile)
		if err != nil {
			return cfg, err
		}
		cfg.LeafSites = append(cfg.LeafSites, sites...)
	}
	if err := f.siteConfig(&cfg, fc.Hub, set); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// siteConfig fills a site broker's link to its hub.
func (f *Flags) siteConfig(cfg *Config, h *hubConfig, set map[string]bool) error {
	if h != nil {
		switch {
		case len(h.URLs) == 0:
			return errors.New("a site needs its hub's leaf URL: --hub nats-leaf://HUB:7422")
		case h.Site == "":
			return errors.New("a site needs its name: --site NAME (as the hub's leaf sites list it)")
		case h.SecretFile == "":
			return errors.New("a site needs its secret: --site-secret-file FILE (written by cc-broker leaf-site NAME)")
		}
		secret, err := ReadLeafSecret(h.SecretFile)
		if err != nil {
			return err
		}
		cfg.Hub = &LeafHub{URLs: h.URLs, Site: h.Site, Secret: secret}
		cfg.HubTLS = h.TLS
	}
	if set["hub-tls-ca"] || set["hub-tls-cert"] || set["hub-tls-key"] {
		if cfg.Hub == nil {
			return errors.New("--hub-tls-ca, --hub-tls-cert and --hub-tls-key are for a site's link to its hub: give --hub, --site and --site-secret-file too")
		}
		if set["hub-tls-ca"] {
			cfg.HubTLS.CAFile = f.hubTLS.CAFile
		}
		if set["hub-tls-cert"] {
			cfg.HubTLS.CertFile = f.hubTLS.CertFile
		}
		if set["hub-tls-key"] {
			cfg.HubTLS.KeyFile = f.hubTLS.KeyFile
		}
	}
	return nil
}

// mergeFile fills every option not given as a flag from the config file.
func (f *Flags) mergeFile(fc *fileConfig, set map[string]bool) error {
	path := f.configFile
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var file fileConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&file); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if !f.Standalone {
		if file.Auth != "" {
			return fmt.Errorf("config file %s: \"auth\" is for cc-broker; an embedded broker uses the control service's own keys: remove it", path)
		}
		if file.Hub != nil {
			return fmt.Errorf("config file %s: \"hub\" makes a site's broker, which is cc-broker's (the control service runs behind the hub): remove it", path)
		}
	}
	pick := func(flagName string, dst *string, v string) {
		if !set[flagName] && v != "" {
			*dst = v
		}
	}
	pick("auth", &fc.Auth, file.Auth)
	pick("listen", &fc.Listen, file.Listen)
	pick("name", &fc.Name, file.Name)
	pick("cluster-name", &fc.ClusterName, file.ClusterName)
	pick("cluster-listen", &fc.ClusterListen, file.ClusterListen)
	pick("leaf-listen", &fc.LeafListen, file.LeafListen)
	pick("monitor-listen", &fc.MonitorListen, file.MonitorListen)
	pick("ping-interval", &fc.PingInterval, file.PingInterval)
	if !set["routes"] && len(file.Routes) > 0 {
		fc.Routes = cli.SplitList(strings.Join(file.Routes, ","))
	}
	pick("store-dir", &fc.StoreDir, file.StoreDir)
	pick("leaf-sites", &fc.LeafSitesFile, file.LeafSitesFile)
	fc.LeafSites = file.LeafSites
	if file.Hub != nil {
		if fc.Hub == nil {
			fc.Hub = &hubConfig{}
		}
		if !set["hub"] {
			fc.Hub.URLs = file.Hub.URLs
		}
		pick("site", &fc.Hub.Site, file.Hub.Site)
		pick("site-secret-file", &fc.Hub.SecretFile, file.Hub.SecretFile)
		fc.Hub.TLS = file.Hub.TLS
	}
	pick("cluster-secret-file", &fc.ClusterSecretFile, file.ClusterSecretFile)
	for _, t := range []struct {
		prefix   string
		dst, src *TLSFiles
	}{{"tls", &fc.TLS, &file.TLS}, {"cluster-tls", &fc.ClusterTLS, &file.ClusterTLS}, {"leaf-tls", &fc.LeafTLS, &file.LeafTLS}} {
		pick(t.prefix+"-cert", &t.dst.CertFile, t.src.CertFile)
		pick(t.prefix+"-key", &t.dst.KeyFile, t.src.KeyFile)
		pick(t.prefix+"-ca", &t.dst.CAFile, t.src.CAFile)
		if !set[t.prefix+"-verify"] && t.src.Verify {
			t.dst.Verify = true
		}
	}
	if !set["allow-plaintext-leaf"] && file.AllowPlaintextLeaf {
		fc.AllowPlaintextLeaf = true
	}
	pick("websocket-listen", &fc.WebSocketListen, file.WebSocketListen)
	if !set["websocket-origins"] && len(file.WebSocketOrigins) > 0 {
		fc.WebSocketOrigins = cli.SplitList(strings.Join(file.WebSocketOrigins, ","))
	}
	if !set["allow-plaintext-websocket"] && file.AllowPlaintextWebSocket {
		fc.AllowPlaintextWebSocket = true
	}
	if !set["max-payload"] && file.MaxPayload != 0 {
		fc.MaxPayload = file.MaxPayload // checked by Options, as a flag's
	}
	if !set["max-pings-out"] && file.MaxPingsOut > 0 {
		fc.MaxPingsOut = file.MaxPingsOut
	}
	return nil
}
