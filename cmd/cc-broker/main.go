// Command cc-broker runs the commandcontrol broker alone (an embedded NATS
// server with the accounts and auth callout wiring), for deployments where
// the broker and the control service run apart, in a cluster, or as a leaf
// node hub. The control service writes the keys it needs to
// <data>/broker-auth.json.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/internal/cli"
	"github.com/commandcontrol/commandcontrol/internal/logging"
	"github.com/commandcontrol/commandcontrol/internal/version"
)

func main() {
	cli.Main("cc-broker", func(ctx context.Context, args []string, _, stderr io.Writer) error { return run(ctx, args, stderr) })
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
	attrs := []any{"listen", cfg.Listen, "tls", b.TLSRequired(), "cluster", cfg.ClusterListen, "leaf", cfg.LeafListen, "websocket", cfg.WebSocketListen, "store_dir", cfg.StoreDir}
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
	bf := &broker.Flags{Standalone: true}
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
	bf.Register(fs)
	lf.Register(fs)
	if err := version.Parse(fs, args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	cfg, err := bf.Config()
	if err != nil {
		return nil, nil, err
	}
	return &cfg, lf, nil
}
