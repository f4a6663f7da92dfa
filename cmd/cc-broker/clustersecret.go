package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/internal/keyfile"
)

// clusterSecret creates the secret every broker of a cluster presents on
// its routes, in a 0600 file to copy to each of them.
func clusterSecret(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cc-broker cluster-secret", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("secret-out", "cluster.secret", "write the secret to FILE (never overwritten)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: cc-broker cluster-secret [--secret-out FILE]

Creates a cluster's route secret: a random secret written to a file (mode
0600). Copy that file to every broker of the cluster and start each with
--cluster-secret-file FILE: a route that does not present it is refused.
Routes should also run over mutual TLS (--tls-cert, --tls-key, --tls-ca),
which checks the broker at the other end too.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("cluster-secret: unexpected argument %q", fs.Arg(0))
	}
	if *out == "" {
		return errors.New("cluster-secret: --secret-out needs a file name")
	}
	secret, err := broker.NewClusterSecret()
	if err != nil {
		return fmt.Errorf("cluster-secret: %w", err)
	}
	if err := writeSecret("cluster-secret", *out, secret); err != nil {
		return err
	}
	fmt.Fprintf(stdout, `The cluster secret is in %s (mode 0600). Copy it to every broker of the
cluster (it is a broker credential: nothing else needs it) and start each with

  cc-broker --auth broker-auth.json --cluster-listen 0.0.0.0:6222 \
    --routes nats-route://OTHER-BROKER:6222 --cluster-secret-file %s \
    --tls-cert broker.pem --tls-key broker-key.pem --tls-ca ca.pem

(or "cluster_secret_file" in a --config file).
`, *out, *out)
	return nil
}

// writeSecret writes a new secret file for command cmd (mode 0600),
// never overwriting one.
func writeSecret(cmd, path, secret string) error {
	if err := keyfile.Create(path, []byte(secret+"\n")); err != nil {
		return fmt.Errorf("%s: %w (an existing secret is never overwritten; remove it or pick --secret-out)", cmd, err)
	}
	return nil
}
