package perf

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/commandcontrol/commandcontrol/bench"
)

// RawBrokerCommand is the argument that makes cc-perf a plain nats-server
// of the baseline cluster (RunRawBroker): the baseline brokers are
// processes of their own, as the cluster's are.
const RawBrokerCommand = "raw-broker"

// RunRawBroker runs a plain nats-server (no auth, no JetStream) with a
// cluster listener and routes, until ctx ends: the baseline cluster's
// broker, or alone (no --cluster-listen) the single-broker baseline's.
// args: --listen HOST:PORT [--cluster-listen HOST:PORT --routes URLS].
func RunRawBroker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(RawBrokerCommand, flag.ContinueOnError)
	listen := fs.String("listen", "", "client HOST:PORT")
	cluster := fs.String("cluster-listen", "", "route HOST:PORT")
	routes := fs.String("routes", "", "comma-separated route URLs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, port, err := hostPort(*listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	opts := &server.Options{Host: host, Port: port, NoLog: true, NoSigs: true,
		// As cc-broker: a client still connecting under load takes the
		// short first ping for a protocol error ("expected 'PONG', got
		// 'PING'"); it changes nothing after the connection is up.
		DisableShortFirstPing: true}
	if *cluster != "" {
		chost, cport, err := hostPort(*cluster)
		if err != nil {
			return fmt.Errorf("--cluster-listen: %w", err)
		}
		opts.Cluster = server.ClusterOpts{Name: "baseline", Host: chost, Port: cport}
	}
	for _, r := range strings.Split(*routes, ",") {
		if r == "" {
			continue
		}
		u, err := url.Parse(r)
		if err != nil {
			return fmt.Errorf("--routes: %w", err)
		}
		opts.Routes = append(opts.Routes, u)
	}
	raiseFileLimit()
	srv, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	go srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("baseline broker on %s not ready after 10s", *listen)
	}
	fmt.Println("ready")
	<-ctx.Done()
	return nil
}

func hostPort(s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	return h, n, err
}

// clusterRows measures a fleet of n agents spread over a cluster of
// cfg.Brokers brokers with cfg.ControlReplicas control services:
// admission, the full-fleet call against the same fan-out over a plain
// NATS cluster of as many brokers (same run, same machine, run after the
// commandcontrol cluster is stopped so the two do not share the CPUs),
// the brokers' memory per agent, and one broker restarted.
func clusterRows(ctx context.Context, cfg Config, n int) ([]Row, error) {
	dir, err := os.MkdirTemp("", "cc-perf-cluster-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	where := fmt.Sprintf("%d brokers, %d control replica(s)", cfg.Brokers, cfg.ControlReplicas)
	fmt.Fprintf(cfg.Progress, "cluster (%s), %d agents: starting the brokers and control services in %s…\n", where, n, dir)
	cl, err := startCluster(ctx, cfg, dir)
	if err != nil {
		return nil, err
	}
	defer cl.close()
	c, err := bench.Connect(cl.urls(0), bench.WithSeedFile(cl.adminKey), bench.WithName("cc-perf"))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	idle := map[string]int64{}
	for _, b := range cl.brokers {
		idle[b.name] = rssBytes(b.cmd.Process.Pid)
	}
	fmt.Fprintf(cfg.Progress, "cluster: registering and connecting %d agents…\n", n)
	start := time.Now()
	procs, connect, err := spawnSwarmAt(ctx, cfg.SwarmBinary, cl.urls, cl.adminKey, n, "perf", false)
	if err != nil {
		return nil, err
	}
	defer procs.stop()
	if _, err := waitCount(ctx, "machines ONLINE", n, 10*time.Minute, func() (int, error) { return onlineCount(ctx, c) }); err != nil {
		return nil, err
	}
	admitted := time.Since(start)
	rate := float64(n) / admitted.Seconds()
	rows := []Row{{
		What:  fmt.Sprintf("cluster (%s): %d agents admitted", where, n),
		Value: fmt.Sprintf("%s, %.0f /s", admitted.Round(time.Millisecond), rate),
		Note: fmt.Sprintf("registration included: from spawning the simulators to all ONLINE; slowest simulator connected its share in %s",
			connect.Round(time.Millisecond)),
	}}
	var rss, grown int64
	var per []string
	for _, b := range cl.brokers {
		r := rssBytes(b.cmd.Process.Pid)
		conns, _ := b.connections(ctx)
		rss, grown = rss+r, grown+r-idle[b.name]
		per = append(per, fmt.Sprintf("%s: %d connections, %.0f MiB (%.0f MiB before the agents)", b.name, conns, float64(r)/(1<<20), float64(idle[b.name])/(1<<20)))
	}
	rows = append(rows, Row{What: fmt.Sprintf("cluster: broker memory per agent (RSS growth of the %d brokers ÷ %d agents)", cfg.Brokers, n),
		Value: fmt.Sprintf("%.1f KiB", float64(grown)/float64(n)/1024),
		Note:  fmt.Sprintf("total RSS %.0f MiB (%.1f KiB per agent); %s", float64(rss)/(1<<20), float64(rss)/float64(n)/1024, strings.Join(per, "; "))})

	fmt.Fprintf(cfg.Progress, "cluster: %d full-fleet calls…\n", cfg.Reps)
	// An untimed call first: the agents' interest reaches the other
	// brokers over the routes a moment after they are ONLINE.
	for try := 0; ; try++ {
		if _, _, err := fleetCall(ctx, c, n, 1); err == nil {
			break
		} else if try == 5 {
			return rows, fmt.Errorf("cluster: warm-up call: %w", err)
		}
	}
	d, _, err := fleetCall(ctx, c, n, cfg.Reps)
	if err != nil {
		return rows, err
	}
	rows = append(rows, clusterRestartRow(ctx, cfg, cl, c, n))
	procs.stop()
	c.Close()
	cl.close()

	fmt.Fprintf(cfg.Progress, "cluster: baseline (plain nats.go fan-out on %d plain routed nats-servers)…\n", cfg.Brokers)
	raw, err := rawClusterFanout(ctx, cfg, dir, n)
	row := Row{
		What:  fmt.Sprintf("cluster: full-fleet call, %d agents, all replies in (p50 / p99 over %d)", n, cfg.Reps),
		Value: ms(d.Quantile(0.5)) + " / " + ms(d.Quantile(0.99)),
	}
	if t, ok := fanoutTargets[n]; ok {
		row.Target, row.Met = "≤ "+ms(t)+" p50", yes(d.Quantile(0.5) <= t)
	}
	if err != nil {
		row.Note = "baseline failed: " + err.Error()
		return append(rows, row), nil
	}
	row.Baseline, row.Ratio = ms(raw.Quantile(0.5))+" / "+ms(raw.Quantile(0.99)), ratio(d.Quantile(0.5), raw.Quantile(0.5))
	return append(rows, row), nil
}

// clusterRestartRow stops the last broker and measures the time until
// every agent is ONLINE again through the others, then starts it again.
// Its agents must fit on the others: past the open-file limit the row
// says so instead.
func clusterRestartRow(ctx context.Context, cfg Config, cl *ccCluster, c *bench.Client, n int) Row {
	survivors := len(cl.brokers) - 1
	what := fmt.Sprintf("cluster: one broker of %d restarted, its agents ONLINE again through the others", len(cl.brokers))
	// Agents spread at random: allow 5 % over an even share.
	if need, limit := n*105/100/survivors+500, fileLimit(); survivors == 0 || need > limit {
		return Row{What: what, Value: "not measured", Note: fmt.Sprintf(
			"the other %d brokers would hold about %d connections each, over the %d open files a process may have here; measure the restart at a size that fits (--sizes %d)",
			survivors, need, limit, max(0, (limit-500)*survivors*100/105))}
	}
	victim := cl.brokers[len(cl.brokers)-1]
	held, _ := victim.connections(ctx)
	fmt.Fprintf(cfg.Progress, "cluster: stopping broker %s (%d connections)…\n", victim.name, held)
	victim.stop()
	start := time.Now()
	// Presence first drops the broker's agents (its shutdown event), then
	// counts them again as they reconnect to the others.
	if _, err := waitCount(ctx, "machines ONLINE after the broker stopped", n, 5*time.Minute, func() (int, error) {
		got, err := onlineCount(ctx, c)
		if err == nil && got >= n {
			// All ONLINE: only once the others hold the agents.
			total := 0
			for _, b := range cl.brokers[:survivors] {
				conns, err := b.connections(ctx)
				if err != nil {
					return 0, err
				}
				total += conns
			}
			if total < n {
				return total, nil
			}
		}
		return got, err
	}); err != nil {
		return Row{What: what, Value: "failed", Note: err.Error()}
	}
	took := time.Since(start)
	note := fmt.Sprintf("broker %s held %d connections; stopped with SIGTERM", victim.name, held)
	if err := victim.start(cfg.BrokerBinary); err != nil {
		note += "; restarting it failed: " + err.Error()
	} else if err := victim.waitRoutes(ctx, survivors, time.Minute); err != nil {
		note += "; it did not rejoin: " + err.Error()
	} else {
		note += "; it rejoined the cluster"
	}
	return Row{What: what, Value: took.Round(time.Millisecond).String(), Target: "—", Note: note}
}

// rawClusterFanout is the baseline on a plain cluster of cfg.Brokers
// nats-servers (cc-perf raw-broker processes), the responders spread as
// the agents were.
func rawClusterFanout(ctx context.Context, cfg Config, dir string, n int) (Durations, error) {
	type ports struct{ client, cluster string }
	var ps []ports
	for range cfg.Brokers {
		var p ports
		var err error
		if p.client, err = freePort(); err != nil {
			return nil, err
		}
		if p.cluster, err = freePort(); err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	var brokers []*ccBroker
	defer func() {
		for _, b := range brokers {
			b.stop()
		}
	}()
	for i, p := range ps {
		var routes []string
		for j, q := range ps {
			if j != i {
				routes = append(routes, "nats-route://"+q.cluster)
			}
		}
		b := &ccBroker{name: fmt.Sprintf("raw%d", i+1), url: "nats://" + p.client, log: filepath.Join(dir, fmt.Sprintf("raw-%d.log", i+1)),
			args: []string{RawBrokerCommand, "--listen", p.client, "--cluster-listen", p.cluster, "--routes", strings.Join(routes, ",")}}
		if err := b.start(cfg.PerfBinary); err != nil {
			return nil, err
		}
		brokers = append(brokers, b)
		if err := waitLogLine(ctx, b.log, "ready", 30*time.Second); err != nil {
			return nil, err
		}
	}
	urls := func(first int) string {
		var out []string
		for i := range brokers {
			out = append(out, brokers[(first+i)%len(brokers)].url)
		}
		return strings.Join(out, ",")
	}
	return rawFanoutAt(ctx, cfg.SwarmBinary, urls, n, cfg.Reps)
}
