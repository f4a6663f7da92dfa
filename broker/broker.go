// Package broker embeds the NATS server commandcontrol runs on.
//
// It sets up three accounts — SYS (the system account), CONTROL (where the
// control service answers the auth callout) and FLEET (agents and operators)
// — and turns the auth callout on for every connection except the control
// service's own three users. The ping interval is tuned so a silently dead
// client is dropped within half a minute or so instead of NATS's default of
// minutes, at the fewest pings that bound costs (DefaultPingInterval).
// Beyond one process it is plain NATS: cluster routes and leaf nodes.
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Account names.
const (
	SystemAccount  = "SYS"
	ControlAccount = "CONTROL"
	FleetAccount   = "FLEET"
)

// Defaults for dead-client detection. The server pings a client every
// PingInterval unless it heard from it (a message or the client's own
// PING) within the last interval, and drops it when a ping would make
// more than MaxPingsOut unanswered. A client silently dead since its last
// word is therefore dropped within PingInterval × (MaxPingsOut+1) of the
// first interval it stays silent for, and at worst PingInterval ×
// (MaxPingsOut+2) after its last word: 26 s and 39 s by default (10 s and
// 2 used to give 30 s and 40 s).
//
// Pings are most of what the broker does at rest (issue 17: 500 ping/pong
// pairs a second with 5,000 agents, each a read and a write). Agents ping
// every 20 s on their own (agent.go) and the server skips its ping after
// one, so a link carries one pair per min(PingInterval, 20 s); one ping
// out allowed instead of two lets the interval grow from 10 s to 13 s
// with a worst case no longer than before: 23 % fewer pairs.
const (
	DefaultPingInterval = 13 * time.Second
	DefaultMaxPingsOut  = 1
	DefaultAuthTimeout  = 5 * time.Second
)

// MinMaxPayload is the smallest max payload a broker accepts (flag or
// config file): below it the callout's and the control service's own
// messages do not fit.
const MinMaxPayload = 1024

// AuthKeys are the public keys the broker must know about the control
// service: who may sign user JWTs in callout responses and which nkey users
// bypass the callout because they are the control service itself.
type AuthKeys struct {
	// CalloutIssuer is the account public key (A…) that signs every
	// callout response and user JWT.
	CalloutIssuer string `json:"callout_issuer"`
	// CalloutXKey is the curve public key (X…) callout requests are
	// encrypted for. Optional.
	CalloutXKey string `json:"callout_xkey,omitempty"`
	// SysUser, ControlUser and FleetUser are the control service's user
	// nkeys (U…) in the SYS, CONTROL and FLEET accounts.
	SysUser     string `json:"sys_user"`
	ControlUser string `json:"control_user"`
	FleetUser   string `json:"fleet_user"`
	// CallsUser is the control service's FLEET user that watches calls
	// for the audit and answers for offline machines.
	CallsUser string `json:"calls_user"`
	// AnnounceUser is the control service's FLEET user that publishes
	// presence events and the agents' hint, and nothing else; it serves
	// no requests, so no reply subject can aim it anywhere.
	AnnounceUser string `json:"announce_user"`
}

// Validate checks that every required key is present, of the right kind
// and with a valid checksum.
func (k AuthKeys) Validate() error {
	checks := []struct {
		name, val, kind string
		ok              func(string) bool
	}{
		{"callout_issuer", k.CalloutIssuer, "an account public key (A…)", nkeys.IsValidPublicAccountKey},
		{"sys_user", k.SysUser, "a user public key (U…)", nkeys.IsValidPublicUserKey},
		{"control_user", k.ControlUser, "a user public key (U…)", nkeys.IsValidPublicUserKey},
		{"fleet_user", k.FleetUser, "a user public key (U…)", nkeys.IsValidPublicUserKey},
		{"calls_user", k.CallsUser, "a user public key (U…); broker-auth.json files written before it existed lack it: copy the one cc-control writes now", nkeys.IsValidPublicUserKey},
		{"announce_user", k.AnnounceUser, "a user public key (U…); broker-auth.json files written before it existed lack it: copy the one cc-control writes now", nkeys.IsValidPublicUserKey},
	}
	if k.CalloutXKey != "" {
		checks = append(checks, struct {
			name, val, kind string
			ok              func(string) bool
		}{"callout_xkey", k.CalloutXKey, "a curve public key (X…)", nkeys.IsValidPublicCurveKey})
	}
	for _, c := range checks {
		if !c.ok(c.val) {
			return fmt.Errorf("auth key %s = %q: want %s", c.name, c.val, c.kind)
		}
	}
	return nil
}

// AuthFile is the file, in the control service's data directory, where it
// writes the AuthKeys a stand-alone broker (cc-broker --auth FILE) needs.
const AuthFile = "broker-auth.json"

// LoadAuthKeys reads and validates an AuthFile written by the control
// service.
func LoadAuthKeys(path string) (AuthKeys, error) {
	var a AuthKeys
	b, err := os.ReadFile(path)
	if err != nil {
		return a, fmt.Errorf("read broker auth file: %w (cc-control writes it to <data>/%s on start)", err, AuthFile)
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return a, fmt.Errorf("broker auth file %s: %w", path, err)
	}
	return a, a.Validate()
}

// Config configures a broker. The zero value plus Auth listens on
// 127.0.0.1:4222.
type Config struct {
	// Listen is host:port for clients; port 0 picks a free one.
	Listen string
	// Name is the server name (shown in events and cluster views).
	Name string
	// Auth is required.
	Auth AuthKeys
	// PingInterval and MaxPingsOut bound dead-client detection.
	PingInterval time.Duration
	MaxPingsOut  int
	// AuthTimeout bounds a connection's authentication, callout included.
	AuthTimeout time.Duration
	// Cluster joins a NATS cluster (routes) when ClusterListen is set.
	ClusterName   string
	ClusterListen string
	Routes        []string
	// LeafListen accepts leaf-node connections from the remote sites in
	// LeafSites (a hub). Each site links the three accounts over its own
	// leaf connections; a site that is not listed is refused.
	LeafListen string
	LeafSites  []LeafSite
	// Hub, when set, makes this broker a remote site's leaf node of the
	// hub broker at Hub.URLs (see LeafHub).
	Hub *LeafHub
	// MonitorListen serves the NATS monitoring HTTP endpoints when set
	// (over HTTPS when TLS has a certificate).
	MonitorListen string
	// TLS is the client port's certificate (also HTTPS monitoring's, and
	// routes' and the leaf listener's unless ClusterTLS or LeafTLS name
	// their own); Verify requires clients' certificates signed by CAFile.
	TLS TLSFiles
	// ClusterTLS is the routes' TLS (mutual: both ends verify each other
	// against CAFile); zero means TLS's certificate and CA.
	ClusterTLS TLSFiles
	// ClusterSecret, when set, is the secret every route must present
	// (user RouteUser); ReadClusterSecret reads it from its file. Every
	// cluster listener needs it; off loopback, route TLS as well.
	ClusterSecret string
	// LeafTLS is the hub's leaf listener's TLS; zero means TLS's
	// certificate. Verify requires sites' certificates (mutual TLS).
	LeafTLS TLSFiles
	// HubTLS is a site's TLS to its hub: CAFile verifies the hub,
	// CertFile/KeyFile are presented when the hub asks (LeafTLS.Verify).
	// Zero means TLS.CAFile, if set, verifies the hub.
	HubTLS TLSFiles
	// AllowPlaintextLeaf lets a leaf listener or a link to a hub off
	// loopback run without TLS (e.g. inside a VPN).
	AllowPlaintextLeaf bool
	// MaxPayload bounds one message (default 1 MiB; at least
	// MinMaxPayload).
	MaxPayload int32
	// Logger receives the server's log; nil discards it.
	Logger *slog.Logger
	// Debug turns on the server's debug log.
	Debug bool
	// WebSocketListen, when set, serves NATS over WebSocket on
	// HOST:PORT (port 0 picks a free one) for sessions and any client
	// that speaks only HTTP(S), through the same auth callout as the
	// client port (see websocket.go). With TLS's certificate it speaks
	// only wss://; without, it is refused off loopback unless
	// AllowPlaintextWebSocket.
	WebSocketListen string
	// WebSocketOrigins, when set, are the only origins
	// (https://host[:port]) whose pages a browser may open a WebSocket
	// connection from; empty lets any page.
	WebSocketOrigins []string
	// AllowPlaintextWebSocket lets the WebSocket listener on a
	// non-loopback address run without TLS (behind a proxy that ends it).
	AllowPlaintextWebSocket bool
	// StoreDir, when set, turns JetStream on with file storage in this
	// directory, for the CONTROL account only (the control service keeps
	// its audit stream there). The FLEET account never gets JetStream:
	// agents and operators cannot reach any $JS API. Brokers of a
	// cluster each with a Name and a StoreDir, each listing the others
	// in Routes, form a JetStream cluster: the control service's stores
	// are then replicated on three of them.
	StoreDir string
	// DeferListen keeps the client port closed when Start returns, until
	// Listen: a control service embedding the broker connects in process
	// and opens the port once it answers the callout and its API, so no
	// client connects to a broker nobody admits it to. Not with
	// ClusterListen: nats-server starts its routes only once its client
	// port is open, so a clustered broker listens at Start (see
	// ListenDeferred).
	DeferListen bool
}

// ListenDeferred reports whether a broker of cfg opens its client port
// only at Listen.
func (cfg Config) ListenDeferred() bool { return cfg.DeferListen && cfg.ClusterListen == "" }

// Broker is a running embedded NATS server.
type Broker struct {
	srv *server.Server
	cfg Config
	tls bool
	// wsTLS tells whether the WebSocket listener speaks TLS; wsPort is
	// its port once started (0: none).
	wsTLS  bool
	wsPort int
}

// New validates cfg and builds (but does not start) a broker.
func New(cfg Config) (*Broker, error) {
	cfg = cfg.WithDefaults()
	opts, err := Options(&cfg)
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if cfg.Logger != nil {
		srv.SetLoggerV2(newLogAdapter(cfg.Logger, nil), cfg.Debug, false, false)
		for _, w := range securityWarnings(&cfg, opts) {
			cfg.Logger.Warn("insecure: " + w)
		}
	}
	return &Broker{srv: srv, cfg: cfg, tls: opts.TLSConfig != nil, wsTLS: opts.Websocket.TLSConfig != nil}, nil
}

// WithDefaults returns cfg with every default filled in: the listen
// address, the ping interval and count, and the auth timeout (kept within
// the ping interval).
func (cfg Config) WithDefaults() Config {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:4222"
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.MaxPingsOut <= 0 {
		cfg.MaxPingsOut = DefaultMaxPingsOut
	}
	if cfg.AuthTimeout <= 0 {
		cfg.AuthTimeout = DefaultAuthTimeout
	}
	// The server pings a client still waiting for the callout; a client
	// mid-handshake takes that PING for a protocol error. Keep the auth
	// timeout inside the first ping interval — the configured one: the
	// server's short first ping (2 s after CONNECT, for a quick RTT
	// estimate) is turned off below, since it cut every handshake whose
	// callout took over 2 s, however long the auth timeout. Under load
	// the broker then finished authorisations for clients that had given
	// up (a reconnect storm's "joined", then "left: Read Error").
	cfg.AuthTimeout = min(cfg.AuthTimeout, cfg.PingInterval*4/5)
	return cfg
}

// Options turns cfg, with its defaults (WithDefaults), into nats-server
// options. It does not modify *cfg.
func Options(cfg *Config) (*server.Options, error) {
	if err := cfg.Auth.Validate(); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if cfg.MaxPayload != 0 && cfg.MaxPayload < MinMaxPayload {
		return nil, fmt.Errorf("broker: max payload %d bytes is too small: the callout's and the control service's messages need at least %d; give e.g. 4194304, or nothing for 1 MiB", cfg.MaxPayload, MinMaxPayload)
	}
	c := cfg.WithDefaults()
	cfg = &c
	host, port, err := splitHostPort("listen", cfg.Listen)
	if err != nil {
		return nil, err
	}
	sys := server.NewAccount(SystemAccount)
	ctl := server.NewAccount(ControlAccount)
	fl := server.NewAccount(FleetAccount)
	opts := &server.Options{
		ServerName:            cfg.Name,
		Host:                  host,
		Port:                  port,
		PingInterval:          cfg.PingInterval,
		MaxPingsOut:           cfg.MaxPingsOut,
		AuthTimeout:           cfg.AuthTimeout.Seconds(),
		MaxPayload:            cfg.MaxPayload,
		Accounts:              []*server.Account{sys, ctl, fl},
		SystemAccount:         SystemAccount,
		AlwaysEnableNonce:     true,
		DisableShortFirstPing: true,
		NoSigs:                true,
		// A client that does not read its messages fast enough has them
		// dropped (and, past max pending, is closed as a slow consumer);
		// the publisher is never made to wait for it. With the default
		// stall, the control service's serving connection waited up to
		// 10 ms per read for one viewer's wedged inbox, and every other
		// operator's snapshot queued behind (issue #11, finding 5;
		// e2e TestSnapshotSlowReaderDelaysNoOne).
		NoFastProducerStall: true,
		// No subject cache in the accounts' sublists. Nearly every
		// subject published here is new: each call's, each reply's
		// inbox, each presence event's (presence.joined.<machine>), so
		// the cache holds 1,024 subjects seen once, and every wildcard
		// subscription (two per agent) and unsubscription walks all of
		// them: 7 % of cc-control's CPU while 5,000 agents connected
		// (issue #17; BENCHMARKS.md). A publish now matches the
		// subject tree (a few levels) instead of a cache lookup.
		NoSublistCache: true,
		Nkeys: []*server.NkeyUser{
			{Nkey: cfg.Auth.SysUser, Account: sys},
			{Nkey: cfg.Auth.ControlUser, Account: ctl},
			{Nkey: cfg.Auth.FleetUser, Account: fl, Permissions: controlFleetPermissions()},
			{Nkey: cfg.Auth.CallsUser, Account: fl, Permissions: callsPermissions()},
			{Nkey: cfg.Auth.AnnounceUser, Account: fl, Permissions: announcePermissions()},
		},
		AuthCallout: &server.AuthCallout{
			Issuer:    cfg.Auth.CalloutIssuer,
			Account:   ControlAccount,
			AuthUsers: []string{cfg.Auth.SysUser, cfg.Auth.ControlUser, cfg.Auth.FleetUser, cfg.Auth.CallsUser, cfg.Auth.AnnounceUser},
			XKey:      cfg.Auth.CalloutXKey,
		},
		Debug: cfg.Debug,
	}
	if cfg.StoreDir != "" {
		opts.JetStream, opts.StoreDir = true, cfg.StoreDir
	}
	opts.DontListen = cfg.ListenDeferred()
	if err := clusterOptions(cfg, opts); err != nil {
		return nil, err
	}
	if err := tlsOptions(cfg, opts); err != nil {
		return nil, err
	}
	if err := websocketOptions(cfg, opts); err != nil {
		return nil, err
	}
	return opts, nil
}

func clusterOptions(cfg *Config, opts *server.Options) error {
	if cfg.ClusterListen != "" {
		h, p, err := splitHostPort("cluster listen", cfg.ClusterListen)
		if err != nil {
			return err
		}
		opts.Cluster.Name = cfg.ClusterName
		if opts.Cluster.Name == "" {
			opts.Cluster.Name = "commandcontrol"
		}
		opts.Cluster.Host, opts.Cluster.Port = h, p
		for _, r := range cfg.Routes {
			u, err := url.Parse(strings.TrimSpace(r))
			if err != nil || u.Host == "" {
				return fmt.Errorf("broker: route %q: want nats-route://host:port", r)
			}
			if u.User != nil {
				return fmt.Errorf("broker: route %s carries credentials: give the cluster secret as a file instead (--cluster-secret-file), it is put into every route", u.Redacted())
			}
			opts.Routes = append(opts.Routes, u)
		}
	} else if len(cfg.Routes) > 0 {
		return errors.New("broker: routes given without a cluster listen address")
	}
	if err := leafOptions(cfg, opts); err != nil {
		return err
	}
	if cfg.MonitorListen != "" {
		h, p, err := splitHostPort("monitor listen", cfg.MonitorListen)
		if err != nil {
			return err
		}
		opts.HTTPHost, opts.HTTPPort = h, p
	}
	return nil
}

func splitHostPort(what, hp string) (string, int, error) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("broker: %s address %q: want HOST:PORT (e.g. 127.0.0.1:4222): %v", what, hp, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("broker: %s address %q: port %q is not a number from 0 to 65535", what, hp, p)
	}
	if n == 0 {
		n = server.RANDOM_PORT
	}
	return h, n, nil
}

// controlFleetPermissions are the control service's own FLEET user's,
// the one that serves requests (the control API, snapshots, micro
// discovery): it may read everything there, but publish only under the
// operators' control and discovery inboxes (_INBOX_cc.<key>.@ctl and
// .@srv). Whatever reply subject a client chooses, this user cannot be
// made to publish on a control, call, presence or hint subject, nor on a
// machine's reply subject.
func controlFleetPermissions() *server.Permissions {
	return &server.Permissions{Publish: &server.SubjectPermission{Allow: []string{fleet.ControlReplies(), fleet.DiscoveryReplies()}}}
}

// callsPermissions are the call watcher's user's: it reads calls and
// replies, and answers "no responders" for offline machines (and 400 for
// requests no agent will answer) only into the calling operator's own
// inbox, which the watcher checks against the key the call subject ends
// with.
func callsPermissions() *server.Permissions {
	return &server.Permissions{Publish: &server.SubjectPermission{Allow: []string{fleet.InboxesWildcard}}}
}

// announcePermissions are the announcing user's: publish presence events
// (the machines' and the sessions') and the agents' hint, subscribe to
// nothing.
func announcePermissions() *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{fleet.PresenceEventsWildcard, fleet.SessionEventsWildcard, fleet.AgentHintSubject}},
		Subscribe: &server.SubjectPermission{Deny: []string{">"}},
	}
}

// Start starts the server and waits until it accepts connections (with
// DeferListen: until it could, its client port still closed until Listen;
// an address already in use is refused here all the same).
func (b *Broker) Start() error {
	if b.cfg.ListenDeferred() {
		if err := probeListen(b.cfg.Listen); err != nil {
			return err
		}
	}
	go b.srv.Start()
	if !b.srv.ReadyForConnections(10 * time.Second) {
		b.srv.Shutdown()
		return fmt.Errorf("broker: not ready to accept connections on %s within 10s (is the port in use?)", b.cfg.Listen)
	}
	if err := b.startedWebSocket(); err != nil {
		b.Shutdown()
		return err
	}
	if err := wireLeafSites(b.srv, b.cfg.LeafSites); err != nil {
		b.Shutdown()
		return err
	}
	if b.cfg.StoreDir != "" {
		if err := b.enableControlJetStream(); err != nil {
			b.Shutdown()
			return err
		}
	}
	return nil
}

// Listen opens the client port of a broker started with
// Config.DeferListen, and returns once it accepts connections; for any
// other broker it does nothing. An address it cannot listen on (in use,
// not this host's) is an error naming it.
func (b *Broker) Listen() error {
	if !b.cfg.ListenDeferred() || b.srv.Addr() != nil {
		return nil
	}
	b.srv.AcceptLoop(make(chan struct{}))
	if b.srv.Addr() == nil {
		return fmt.Errorf("broker: cannot listen for clients on %s (is the port in use?)", b.cfg.Listen)
	}
	return nil
}

// probeListen fails early, before a deferred listener is opened, when
// addr cannot be listened on (a port in use: another broker or cc-control).
func probeListen(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("broker: cannot listen for clients on %s: %w", addr, err)
	}
	return l.Close()
}

// Listening reports whether the client port is open.
func (b *Broker) Listening() bool { return b.srv.Addr() != nil }

// enableControlJetStream turns JetStream on for the CONTROL account alone;
// the server enables it for no account by itself when accounts are
// configured without JetStream limits.
func (b *Broker) enableControlJetStream() error {
	acc, err := b.srv.LookupAccount(ControlAccount)
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	if err := acc.EnableJetStream(nil, nil); err != nil {
		return fmt.Errorf("broker: enable JetStream (store %s) for account %s: %w", b.cfg.StoreDir, ControlAccount, err)
	}
	return nil
}

// Run starts the broker and serves until ctx ends, then shuts it down.
func (b *Broker) Run(ctx context.Context) error {
	if err := b.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	b.Shutdown()
	return nil
}

// Shutdown stops the server and waits for it to finish.
func (b *Broker) Shutdown() {
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
}

// TLSRequired reports whether the client port requires TLS.
func (b *Broker) TLSRequired() bool { return b.tls }

// ClientURL is the nats:// URL clients connect to (with DeferListen,
// its port is known once Listen returned).
func (b *Broker) ClientURL() string { return b.srv.ClientURL() }

// ClusterURL is the nats-route:// URL other brokers route to, or "".
func (b *Broker) ClusterURL() string {
	a := b.srv.ClusterAddr()
	if a == nil {
		return ""
	}
	return "nats-route://" + a.String()
}

// ID is the server's id as it appears in system events.
func (b *Broker) ID() string { return b.srv.ID() }

// Server exposes the embedded nats-server (for tests and metrics).
func (b *Broker) Server() *server.Server { return b.srv }
