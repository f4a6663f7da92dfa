// Command cc-agent runs on every server: it connects to the broker with the
// machine's own nkey and serves the client functions (machine-info,
// sw-list, installed-sec-patches, current-cpu-mem-diskio, current-load).
// Until an operator accepts the machine it keeps retrying, and joins as
// soon as it is accepted.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/custom"
	"github.com/commandcontrol/commandcontrol/internal/cli"
	"github.com/commandcontrol/commandcontrol/internal/logging"
	"github.com/commandcontrol/commandcontrol/internal/version"
)

type options struct {
	server, key, id, root  string
	tlsCA, tlsCert, tlsKey string
	allowPlaintext         bool
	functionsDir           string
	functionsPoll          time.Duration
	callTimeout            time.Duration
	printKey               bool
	maxConcurrent          int
	callerRate             float64
	callerBurst            float64
	log                    logging.Flags
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("cc-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: cc-agent [flags]

Connects this machine to the commandcontrol network and serves its client
functions. The key file is created on first start (mode 0600); an operator
then accepts the machine:  cc-bench machines accept <machine-id>

The connection to the broker is TLS, verified against --tls-ca, unless
the broker is on this host (loopback): plain text to another address is
refused unless --allow-plaintext says the network is trusted.

Example:
  cc-agent --server tls://control.example:4222 --tls-ca /etc/cc-agent/ca.pem --key /var/lib/cc-agent/agent.nk

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.server, "server", cli.EnvOr("CC_SERVER", "nats://127.0.0.1:4222"), "broker URL, comma-separated for several (env CC_SERVER)")
	fs.StringVar(&o.tlsCA, "tls-ca", cli.EnvOr("CC_TLS_CA", ""), "PEM `FILE` of the CA that signed the broker's certificate: speak TLS and verify the broker (env CC_TLS_CA)")
	fs.StringVar(&o.tlsCert, "tls-cert", cli.EnvOr("CC_TLS_CERT", ""), "client certificate `FILE` (PEM), for a broker that requires mutual TLS; with --tls-key (env CC_TLS_CERT)")
	fs.StringVar(&o.tlsKey, "tls-key", cli.EnvOr("CC_TLS_KEY", ""), "private key `FILE` (PEM) of --tls-cert (env CC_TLS_KEY)")
	fs.BoolVar(&o.allowPlaintext, "allow-plaintext", cli.EnvOr("CC_ALLOW_PLAINTEXT", "") != "",
		"allow plain text to a broker that is not on this host, on a network you trust (env CC_ALLOW_PLAINTEXT=1); without it only loopback may be plain")
	fs.StringVar(&o.key, "key", cli.EnvOr("CC_AGENT_KEY", "cc-agent.nk"), "the machine's nkey seed file, created on first start (env CC_AGENT_KEY)")
	fs.StringVar(&o.id, "id", "", "machine id (default <primary IP>_<hostname>)")
	fs.StringVar(&o.root, "root", "/", "filesystem root the functions read under (for containers with the host mounted)")
	fs.StringVar(&o.functionsDir, "functions-dir", custom.DefaultFunctionsDir,
		"directory of operators' function definitions (*.json, see docs/FUNCTIONS.md); reloaded on change and on SIGHUP; empty for none")
	fs.DurationVar(&o.functionsPoll, "functions-poll", custom.DefaultReloadInterval,
		"how often --functions-dir is checked for changes (0: only on SIGHUP)")
	fs.DurationVar(&o.callTimeout, "call-timeout", agent.DefaultCallTimeout, "longest a function may run")
	fs.IntVar(&o.maxConcurrent, "max-concurrent", agent.DefaultMaxConcurrent,
		"calls that may run at once; one operator may hold at most half of them, more are answered 503")
	fs.Float64Var(&o.callerRate, "caller-rate", agent.DefaultCallerRate,
		"calls per second one operator may start here, sustained; past it they are answered 429 (negative: no limit)")
	fs.Float64Var(&o.callerBurst, "caller-burst", agent.DefaultCallerBurst, "calls one operator may start here at once, above --caller-rate")
	fs.BoolVar(&o.printKey, "print-key", false, "print the machine id and public key (creating the key if needed) and exit")
	o.log.Register(fs)
	if err := version.Parse(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return o, nil
}

func main() { cli.Main("cc-agent", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := o.log.New(stderr)
	if err != nil {
		return err
	}
	poll := o.functionsPoll
	if poll <= 0 {
		poll = -1 // agent.Config: only on request
	}
	if o.maxConcurrent < 1 || o.callerBurst < 1 {
		return fmt.Errorf("--max-concurrent %d and --caller-burst %g must be at least 1", o.maxConcurrent, o.callerBurst)
	}
	cfg := agent.Config{URL: o.server, TLSCA: o.tlsCA, TLSCert: o.tlsCert, TLSKey: o.tlsKey, AllowPlaintext: o.allowPlaintext,
		KeyFile: o.key, MachineID: o.id, Root: o.root, CallTimeout: o.callTimeout,
		MaxConcurrent: o.maxConcurrent, CallerRate: o.callerRate, CallerBurst: o.callerBurst,
		FunctionsDir: o.functionsDir, FunctionsPoll: poll, Logger: log}
	if o.printKey {
		// Printing the key dials nothing: it works before the broker's
		// CA is installed.
		cfg.URL, cfg.TLSCA, cfg.TLSCert, cfg.TLSKey = "", "", "", ""
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	if o.printKey {
		fmt.Fprintf(stdout, "machine: %s\nkey:     %s\n", a.MachineID(), a.PublicKey())
		return nil
	}
	if a.KeyCreated() {
		log.Info("created the machine key", "file", o.key)
	}
	log.Info("starting agent", "machine", a.MachineID(), "key", a.PublicKey(), "server", o.server,
		"if_not_yet_accepted", "cc-bench machines accept "+a.MachineID(), "functions_dir", o.functionsDir)
	go reloadOnHangup(ctx, a)
	return a.Run(ctx)
}

// reloadOnHangup reloads the operators' functions on every SIGHUP until
// ctx ends.
func reloadOnHangup(ctx context.Context, a *agent.Agent) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			a.Reload()
		}
	}
}
