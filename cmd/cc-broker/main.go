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
	"strings"
	"syscall"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/internal/logging"
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
	StoreDir      string   `json:"store_dir"`
	// A hub lists the sites it accepts: inline, or in a file of their own.
	LeafSites     []broker.LeafSite `json:"leaf_sites"`
	LeafSitesFile string            `json:"leaf_sites_file"`
	// A site names its hub.
	Hub *hubConfig `json:"hub"`
}

// hubConfig is a site broker's link to its hub.
type hubConfig struct {
	URLs       []string `json:"urls"`
	Site       string   `json:"site"`
	SecretFile string   `json:"secret_file"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "cc-broker:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "leaf-site" {
		return leafSite(args[1:], os.Stdout, stderr)
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
	attrs := []any{"listen", cfg.Listen, "cluster", cfg.ClusterListen, "leaf", cfg.LeafListen, "store_dir", cfg.StoreDir}
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

Flags:
`)
		fs.PrintDefaults()
	}
	var hubURLs string
	hub := &hubConfig{}
	fs.StringVar(&configFile, "config", "", "JSON config file (fields: listen, name, auth, cluster_name, cluster_listen, routes, leaf_listen, leaf_sites, leaf_sites_file, hub {urls, site, secret_file}, monitor_listen, ping_interval, max_pings_out, store_dir)")
	fs.StringVar(&fc.Auth, "auth", "", "the control service's broker-auth.json (required)")
	fs.StringVar(&fc.Listen, "listen", "127.0.0.1:4222", "client listen address HOST:PORT")
	fs.StringVar(&fc.Name, "name", "", "server name")
	fs.StringVar(&fc.ClusterName, "cluster-name", "commandcontrol", "cluster name")
	fs.StringVar(&fc.ClusterListen, "cluster-listen", "", "listen for cluster routes on HOST:PORT")
	fs.StringVar(&routes, "routes", "", "comma-separated routes to other brokers (nats-route://host:port)")
	fs.StringVar(&fc.LeafListen, "leaf-listen", "", "hub: accept remote sites' leaf-node connections on HOST:PORT (needs --leaf-sites)")
	fs.StringVar(&fc.LeafSitesFile, "leaf-sites", "", "hub: JSON file listing the sites it accepts, [{\"site\": NAME, \"password_bcrypt\": HASH}] (cc-broker leaf-site NAME prints an entry)")
	fs.StringVar(&hubURLs, "hub", "", "site: comma-separated leaf URLs of the hub (nats-leaf://hub.example:7422)")
	fs.StringVar(&hub.Site, "site", "", "site: this site's name, as the hub lists it")
	fs.StringVar(&hub.SecretFile, "site-secret-file", "", "site: the file cc-broker leaf-site wrote the site's secret to (mode 0600)")
	fs.StringVar(&fc.MonitorListen, "monitor-listen", "", "serve NATS monitoring on HOST:PORT")
	fs.StringVar(&ping, "ping-interval", broker.DefaultPingInterval.String(), "ping interval; a silent client is dropped after (max-pings-out+1) intervals")
	fs.IntVar(&fc.MaxPingsOut, "max-pings-out", broker.DefaultMaxPingsOut, "unanswered pings before a client is dropped")
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
	auth, err := controlsvc.LoadBrokerAuth(fc.Auth)
	if err != nil {
		return nil, nil, err
	}
	pi, err := time.ParseDuration(ping)
	if err != nil {
		return nil, nil, fmt.Errorf("ping interval %q: %v (e.g. 10s)", ping, err)
	}
	cfg := &broker.Config{
		Listen: fc.Listen, Name: fc.Name, Auth: auth, ClusterName: fc.ClusterName, ClusterListen: fc.ClusterListen,
		LeafListen: fc.LeafListen, MonitorListen: fc.MonitorListen, PingInterval: pi, MaxPingsOut: fc.MaxPingsOut,
		StoreDir: fc.StoreDir,
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
	}
	if !set["max-pings-out"] && f.MaxPingsOut > 0 {
		fc.MaxPingsOut = f.MaxPingsOut
	}
	return nil
}
