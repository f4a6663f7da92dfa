// Command cc-swarm runs a simulated fleet in one process: N agents, each a
// real nkey identity with its own connection authorised through the
// callout, serving the real function handlers against synthetic hosts.
// It registers them in bulk first (with an admin key), so a laptop can try
// the whole system:
//
//	cc-control &
//	cc-swarm --key cc-data/admin.nk --agents 500
//	cc-bench --key cc-data/admin.nk call current-load --filter 'load1 > 10'
//
// With --baseline it runs plain nats.go responders instead (no framework,
// no auth): the benchmark harness's baseline.
//
// With --sessions N it simulates sessions of an app instead of agents:
// each a real connection over the broker's WebSocket listener with a user
// nkey of its own, answering latencyCheck (fixed numbers, no fetch) on its
// own subjects. With --key it registers the app first (public):
//
//	cc-control --websocket-listen 127.0.0.1:8080 &
//	cc-swarm --server ws://127.0.0.1:8080 --key cc-data/admin.nk --sessions 1000 --app demo
//	cc-bench --key cc-data/admin.nk call latencyCheck --sessions --arg url=https://example.com/
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/internal/cli"
	"github.com/commandcontrol/commandcontrol/internal/version"
	"github.com/commandcontrol/commandcontrol/swarm"
)

func main() { cli.Main("cc-swarm", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cc-swarm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", cli.EnvOr("CC_SERVER", "nats://127.0.0.1:4222"), "broker URL (env CC_SERVER)")
	tlsCA := fs.String("tls-ca", cli.EnvOr("CC_TLS_CA", ""), "PEM `FILE` of the CA that signed the broker's certificate: speak TLS and verify it (env CC_TLS_CA)")
	allowPlain := fs.Bool("allow-plaintext", false, "allow plain text to a broker not on this host, on a network you trust")
	key := fs.String("key", cli.EnvOr("CC_KEY", ""), "admin operator's nkey seed file, to register the swarm (env CC_KEY)")
	n := fs.Int("agents", 100, "number of simulated agents")
	prefix := fs.String("prefix", "sim", "machine names: 10.a.b.c_<prefix><i>")
	labels := fs.String("labels", "", "extra labels for every member, k=v,k=v")
	conc := fs.Int("concurrency", 512, "connections being set up at once")
	keys := fs.String("keys", "", "keep the members' nkey seeds in `FILE`: read when it exists (it must hold --agents seeds, and be private like any key file), else created (mode 0600), so a later cc-swarm with it (and no --key) connects as the same, registered machines")
	registerOnly := fs.Bool("register-only", false, "with --key: register the members, print \"registered N\" and exit without connecting them (with --keys, for a later run that only connects)")
	baseline := fs.Bool("baseline", false, "run plain nats.go responders on raw.all.current-load instead (benchmark baseline; no auth)")
	var so sessionOpts
	fs.IntVar(&so.n, "sessions", 0, "simulate `N` sessions over WebSocket instead of agents (--server ws://HOST:PORT, the broker's --websocket-listen)")
	fs.StringVar(&so.app, "app", "demo", "sessions: the app they join; with --key it is registered (public, function latencyCheck) unless it exists")
	fs.IntVar(&so.maxSessions, "app-max-sessions", 0, "sessions: max_sessions of the app --key registers (0: the service's default)")
	fs.StringVar(&so.net, "session-net", swarm.DefaultSessionNet, "sessions: IPv4 `CIDR` on loopback their source addresses come from, one each (session i binds the net's address 1+i), so the service sees (and locates, with cc-control --sites) each apart")
	fs.IntVar(&so.first, "session-first", 0, "sessions: index in --session-net of the first session (to split a fleet over processes)")
	fs.StringVar(&so.platform, "platform", "device", "sessions: the platform they declare (browser, mobile, device)")
	fs.BoolVar(&so.baseline, "sessions-baseline", false, "sessions: plain responders instead, no key and no hello, answering raw.sfn.<index>.latencyCheck (benchmark baseline against a plain nats-server with WebSocket)")
	fs.StringVar(&so.idsFile, "ids", "", "sessions: write `FILE` with each session's index, id and source address, one per line, before they connect")
	if err := version.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	if dir := os.Getenv("CC_SWARM_CPUPROFILE"); dir != "" {
		// cc-perf's children: profile each into the directory named.
		stop, err := cli.StartCPUProfile(filepath.Join(dir, fmt.Sprintf("swarm-%d.prof", os.Getpid())))
		if err != nil {
			return err
		}
		defer stop()
	}
	if *baseline {
		return runBaseline(ctx, *server, *n, stdout)
	}
	if so.n > 0 || so.baseline {
		so.server, so.key, so.tlsCA, so.allowPlain, so.conc = *server, *key, *tlsCA, *allowPlain, *conc
		return runSessions(ctx, so, stdout, stderr)
	}
	lab, err := parseLabels(*labels)
	if err != nil {
		return err
	}
	sw, err := swarm.New(swarm.Config{URL: *server, TLSCA: *tlsCA, AllowPlaintext: *allowPlain, N: *n, Prefix: *prefix, Labels: lab, Concurrency: *conc, KeysFile: *keys})
	if err != nil {
		return err
	}
	defer sw.Close()
	if *key != "" {
		var conn []bench.Option
		if *tlsCA != "" {
			conn = append(conn, bench.WithTLSCA(*tlsCA))
		}
		if *allowPlain {
			conn = append(conn, bench.WithPlaintext())
		}
		if err := register(ctx, *server, *key, sw, conn...); err != nil {
			return err
		}
		if *registerOnly {
			fmt.Fprintf(stdout, "registered %d\n", *n)
			return nil
		}
	} else {
		if *registerOnly {
			return errors.New("--register-only needs --key, the admin operator's seed file to register with")
		}
		fmt.Fprintln(stderr, "cc-swarm: no --key: assuming the members are registered already")
	}
	fmt.Fprintf(stdout, "connecting %d\n", *n)
	start := time.Now()
	if err := sw.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ready %d %.3f\n", sw.Connected(), time.Since(start).Seconds())
	<-ctx.Done()
	return nil
}

func register(ctx context.Context, server, key string, sw *swarm.Swarm, conn ...bench.Option) error {
	c, err := bench.Connect(server, append(conn, bench.WithSeedFile(key), bench.WithName("cc-swarm (operator)"))...)
	if err != nil {
		return err
	}
	defer c.Close()
	regs := sw.Registrations()
	for i := 0; i < len(regs); i += 5000 {
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err := c.ImportMachines(rctx, regs[i:min(len(regs), i+5000)])
		cancel()
		if err != nil {
			return fmt.Errorf("register the swarm: %w", err)
		}
	}
	return nil
}

func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels: %q is not k=v", kv)
		}
		out[k] = v
	}
	return out, nil
}
