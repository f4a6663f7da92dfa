package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/commandcontrol/commandcontrol/broker"
)

// leafSite creates a remote site: its secret goes to a 0600 file for the
// site's broker, its SHA-256 to stdout for the hub's leaf sites.
func leafSite(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cc-broker leaf-site", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("secret-out", "", "write the site's secret to FILE (default leaf-NAME.secret; never overwritten)")
	asJSON := fs.Bool("json", false, "print only the hub's leaf_sites entry, as JSON")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: cc-broker leaf-site NAME [--secret-out FILE] [--json]

Creates remote site NAME: a random secret, written to a file (mode 0600)
that belongs on the site's broker only, and the SHA-256 of it, which the
hub and the control service list in their leaf sites. Prints both halves of the configuration.

Flags:
`)
		fs.PrintDefaults()
	}
	var name string
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	if name == "" {
		fs.Usage()
		return errors.New("leaf-site: give the site's name, e.g. cc-broker leaf-site dc2")
	}
	secret, site, err := broker.NewLeafSite(name)
	if err != nil {
		return fmt.Errorf("leaf-site: %w", err)
	}
	path := *out
	if path == "" {
		path = "leaf-" + name + ".secret"
	}
	if err := writeSecret("leaf-site", path, secret); err != nil {
		return err
	}
	entry, _ := json.Marshal(site)
	if *asJSON {
		fmt.Fprintln(stdout, string(entry))
		return nil
	}
	fmt.Fprintf(stdout, `Site %q created; its secret is in %s (mode 0600). Copy that file to the
site's broker only: it is a broker credential.

On the hub, add this entry to the leaf sites (the "leaf_sites" list of
cc-broker --config, or the JSON list given to --leaf-sites):

  %s

and listen for sites over TLS (the link carries the secret):
--leaf-listen 0.0.0.0:7422 --tls-cert hub.pem --tls-key hub-key.pem
The control service behind the hub authorises the sites' links: give it
the same file (cc-control --leaf-sites FILE).

On the site's broker (with the same broker-auth.json as the hub), trusting
the CA that signed the hub's certificate:

  cc-broker --auth broker-auth.json --listen 0.0.0.0:4222 \
    --hub nats-leaf://HUB:7422 --site %s --site-secret-file %s \
    --hub-tls-ca ca.pem --tls-cert site.pem --tls-key site-key.pem

Register the site's machines to it (cc-bench machines add ID --pubkey KEY
--site %s); their agents connect to the site's broker, which admits only
them. Operators connect to the hub.
`, name, path, entry, name, path, name)
	return nil
}
