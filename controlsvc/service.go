// Package controlsvc is the network's gatekeeper: it answers the broker's
// auth callout (identity check against the machine registry, user JWT
// issue with per-role permissions), tracks which machines are ONLINE from
// the broker's connect/disconnect events and publishes joined/left, and
// serves the control API (registry, operators) as the micro service
// cc-control.
package controlsvc

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/natstls"
	"github.com/commandcontrol/commandcontrol/internal/version"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Version is the control service's version as its micro service
// cc-control shows it (a semantic version); the control operation
// version answers the whole build identity (internal/version).
var Version = version.Get().Semver()

// AdminKeyFile is the first operator's seed file in the data directory.
const AdminKeyFile = "admin.nk"

// Defaults.
const (
	DefaultUserTTL        = time.Hour
	DefaultResyncInterval = time.Minute
	// DefaultReconnectRate is Config.ReconnectRate's default.
	DefaultReconnectRate = 1000.0
)

// Config configures the control service.
type Config struct {
	// DataDir holds keys, the registry and the admin key (default ./cc-data).
	DataDir string
	// BrokerURL is an external broker to use; empty embeds one configured
	// by Broker (its Auth is filled in from the service's keys).
	BrokerURL string
	Broker    broker.Config

	// BrokerTLSCA, with BrokerURL, is a PEM file of the CA that signed
	// the external broker's certificate: the service speaks TLS and
	// verifies it. BrokerTLSCert and BrokerTLSKey are a client
	// certificate for a broker that requires mutual TLS; BrokerTLS a
	// ready configuration (the files add to a copy). Without TLS, plain
	// text is refused to a broker off this host unless
	// BrokerAllowPlaintext.
	BrokerTLSCA, BrokerTLSCert, BrokerTLSKey string
	BrokerTLS                                *tls.Config
	BrokerAllowPlaintext                     bool

	// NATSOptions are added to every connection the service makes to
	// its broker, e.g. nats.RootCAs and nats.ClientCert for an external
	// broker over TLS.
	NATSOptions []nats.Option
	// UserTTL is how long an issued user JWT lives; the client then
	// re-authorises transparently.
	UserTTL time.Duration
	// SiteUserTTL is how long a user JWT lives when it is issued for a
	// connection at a remote site's broker (a leaf node of the hub): a
	// removal at a site cut off from the hub takes effect when it expires
	// (see sitettl.go). Default DefaultSiteUserTTL; at most UserTTL.
	SiteUserTTL time.Duration
	// MaxAgentConnections bounds the connections one machine's key may
	// hold at once (default DefaultMaxAgentConnections; negative: no
	// bound).
	MaxAgentConnections int
	// ReadOnlyFunctions are the functions a viewer may call.
	ReadOnlyFunctions []string
	// ResyncInterval is how often presence is re-checked against CONNZ.
	ResyncInterval time.Duration
	// ReconnectRate is the authorisations per second the deployment's
	// brokers and control service sustain (DefaultReconnectRate, measured
	// on a 2-core machine; cc-perf measures yours). Agents spread their
	// reconnection after a broker restart over ONLINE / ReconnectRate
	// seconds (fleet.AgentHint).
	ReconnectRate float64
	// HintInterval is how often the agents' hint is repeated for agents
	// that connected since the last one (default a minute).
	HintInterval time.Duration
	// LeaderLease is the presence publisher's lease (leader.go): with
	// several replicas, one that dies is replaced as the publisher within
	// about 1.25 × LeaderLease (default DefaultLeaderLease; cc-control
	// --leader-lease). ReplicaName names this replica in the lease
	// (default DefaultReplicaName: host and process id).
	LeaderLease time.Duration
	ReplicaName string
	// CallWait is how long the call watcher waits for a call's replies
	// before auditing the missing targets as no-response (default
	// DefaultCallWait).
	CallWait time.Duration
	// LeafSites are the remote sites whose leaf links the hub accepts
	// (the hub's leaf sites file): the callout authorises those links
	// (see leaflinks.go). With an embedded broker, Broker.LeafSites.
	LeafSites []broker.LeafSite
	// SnapshotRate and SnapshotBurst limit the presence snapshots one
	// operator may ask for: per second sustained, and at once (defaults
	// DefaultSnapshotRate, DefaultSnapshotBurst; a negative rate: no
	// limit). Past them the operator is answered 429 at once.
	SnapshotRate  float64
	SnapshotBurst int
	// ControlRate and ControlBurst limit one operator's control API
	// requests the same way (DefaultControlRate, DefaultControlBurst).
	ControlRate  float64
	ControlBurst int
	// SessionRatePerIP and SessionBurstPerIP limit the connection
	// attempts of one source address (an IPv6 address's /64) as a session,
	// and over WebSocket whoever it is: per second sustained, and at once
	// (defaults DefaultSessionRatePerIP, DefaultSessionBurstPerIP; a
	// negative rate: no limit; cc-control --session-rate, --session-burst).
	// Past them an attempt is refused before any signature is checked.
	// Agents and operators on the client port are not counted.
	SessionRatePerIP  float64
	SessionBurstPerIP int
	// MaxSessionsPerApp caps the ONLINE sessions of an app registered
	// without max_sessions (default DefaultMaxSessionsPerApp;
	// cc-control --max-sessions-per-app).
	MaxSessionsPerApp int
	// MaxSessionsPerIP caps the ONLINE sessions of a public app from one
	// source address (an IPv4 address, an IPv6 address's /64), counting
	// those admitted but not yet connected: the per-address rate alone
	// lets one address fill an app's cap within a credential's lifetime.
	// Signed apps are not capped by address (their backend vouches for
	// each session). Default DefaultMaxSessionsPerIP; a negative value:
	// no cap (cc-control --max-sessions-per-address).
	MaxSessionsPerIP int
	// SessionMaxPayload bounds each message a session publishes (its
	// answers), in bytes (default DefaultSessionMaxPayload; at most the
	// broker's max payload; cc-control --session-max-payload). It is put
	// in the session's credentials, and the call watcher closes a
	// session that answers with more.
	SessionMaxPayload int
	// Audit bounds the audit logs and says whether the service may start
	// without a durable audit.
	Audit AuditConfig
	// History bounds the presence history (history.go); it is durable
	// where the audit is (Audit.NotDurable lets both start without).
	History HistoryConfig
	// Preregister, when set, runs in Start once the registry is open and
	// the first admin exists, before the service answers anyone: what
	// cc-control --preregister registers.
	Preregister func(*Registry) error
	Logger      *slog.Logger
	// Locate says where an IP address is, or nil when it does not know:
	// the Location of sessions and machines (package geo builds it from
	// cc-control's --sites and --geoip). It must be safe for concurrent
	// use. Nil: no locations.
	Locate func(ip string) *fleet.Location
	// Now is the service's clock (default time.Now): the callout's
	// request deadlines and JWT expiry, registry and presence times,
	// tombstone ages, the call watcher's waits and the hint interval
	// read it. The broker checks issued JWTs against its own clock, so
	// with a broker it must be the broker's time; tests move it only
	// where no broker judges it.
	Now func() time.Time
}

// Service is a running control service.
type Service struct {
	cfg  Config
	log  *slog.Logger
	keys *Keys
	reg  *Registry
	// started is when the control API began serving (api_version.go).
	started time.Time
	// presence is the presence tracker (presence_tracker.go).
	presence *presenceTracker
	// sessions is the ONLINE set of sessions (session_presence.go), fed
	// by the presence tracker's events; the callout tells it what it
	// admits (admitted), asks it for an app's cap (onlineOf), apps.rm
	// closes an app's sessions through it (closeApp).
	sessions sessionGate
	broker   *broker.Broker
	url      string

	sys, ctl, fl *nats.Conn
	// stopping is set by Close: a connection closed before is a fault.
	stopping atomic.Bool
	// ready is set once Start has finished: everything answers and the
	// embedded broker's client port is open.
	ready        atomic.Bool
	closers      []func()
	mu           sync.Mutex
	adminCreated bool
	metrics      *metrics
	audit        *auditLog
	history      *historyLog
	callHooks    []CallHook
	calls        *nats.Conn
	floodLog     floodLog // sessions closed for flooding (sessionflood.go)
	sessionIPs   atomic.Pointer[ipLimiter]
	// announce publishes presence events and hints (and serves nothing).
	announce *nats.Conn
	// brokerConn is how the service reaches an external broker (nil:
	// its own embedded one).
	brokerConn *natstls.Decision
	// links are the remote sites' live leaf links.
	links leafLinks
	// ctlLimit is the per-operator control API request limit (the
	// snapshot limits are the presence tracker's).
	ctlLimit *opLimiter
	// lease is the presence publisher's lease (leader.go; nil: none,
	// this replica publishes alone).
	lease *presenceLease
	// instance is this process's random id, told apart from another
	// replica's of the same name (leader.go).
	instance string
	// sessionNow, when set, is the clock session tokens are checked
	// against (tests; default the service's clock).
	sessionNow func() time.Time
}

// New loads (or creates) the data directory: keys, registry and, on first
// start, the admin operator key.
func New(cfg Config) (*Service, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = "cc-data"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.UserTTL <= 0 {
		cfg.UserTTL = DefaultUserTTL
	}
	if cfg.SiteUserTTL <= 0 {
		cfg.SiteUserTTL = DefaultSiteUserTTL
	}
	cfg.SiteUserTTL = min(cfg.SiteUserTTL, cfg.UserTTL)
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = DefaultResyncInterval
	}
	if cfg.ReconnectRate <= 0 {
		cfg.ReconnectRate = DefaultReconnectRate
	}
	if cfg.HintInterval <= 0 {
		cfg.HintInterval = time.Minute
	}
	if cfg.LeaderLease == 0 {
		cfg.LeaderLease = DefaultLeaderLease
	}
	if cfg.LeaderLease < minLeaderLease {
		return nil, fmt.Errorf("leader lease %v is too short: give at least %v (e.g. %v): a lease shorter than a few round trips to the brokers flaps", cfg.LeaderLease, minLeaderLease, DefaultLeaderLease)
	}
	if cfg.ReplicaName == "" {
		cfg.ReplicaName = DefaultReplicaName()
	}
	if cfg.CallWait <= 0 {
		cfg.CallWait = DefaultCallWait
	}
	if cfg.SessionMaxPayload == 0 {
		cfg.SessionMaxPayload = DefaultSessionMaxPayload
	}
	if brokerMax := int(cmp.Or(cfg.Broker.MaxPayload, 1<<20)); cfg.SessionMaxPayload < 1 || cfg.SessionMaxPayload > brokerMax {
		return nil, fmt.Errorf("session max payload %d bytes: give 1 to the broker's max payload (%d), e.g. %d", cfg.SessionMaxPayload, brokerMax, DefaultSessionMaxPayload)
	}
	if cfg.ReadOnlyFunctions == nil {
		cfg.ReadOnlyFunctions = DefaultReadOnlyFunctions
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LeafSites == nil {
		cfg.LeafSites = cfg.Broker.LeafSites
	}
	if cfg.SnapshotRate == 0 {
		cfg.SnapshotRate = DefaultSnapshotRate
	}
	if cfg.SnapshotBurst <= 0 {
		cfg.SnapshotBurst = DefaultSnapshotBurst
	}
	if cfg.ControlRate == 0 {
		cfg.ControlRate = DefaultControlRate
	}
	if cfg.ControlBurst <= 0 {
		cfg.ControlBurst = DefaultControlBurst
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	keys, err := LoadOrCreateKeys(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	// The registry is opened by Start, once the broker (and its
	// JetStream) runs: until then it is empty.
	reg := newRegistry(cfg.Now)
	reg.path = filepath.Join(cfg.DataDir, RegistryFile)
	s := &Service{cfg: cfg, log: cfg.Logger, keys: keys, reg: reg, instance: newInstanceID()}
	reg.onSites = s.onSitesChanged
	// An admin.nk others can read is refused at once (ensureAdmin runs
	// in Start).
	if err := checkSeedMode(s.AdminKeyPath()); err != nil {
		return nil, err
	}
	s.ctlLimit = newOpLimiter("control API", "control", cfg.ControlRate, cfg.ControlBurst, cfg.Now)
	s.presence = s.newPresenceTracker()
	s.presence.sessions.appOf = reg.AppFold
	s.sessions = s.presence.sessions
	s.metrics = newMetrics(s)
	s.callHooks = append(s.callHooks, s.metrics.call)
	return s, nil
}

// newPresenceTracker wires the presence tracker to the service's clock,
// registry, connections (once connected), leaf links, audit and limits,
// and restores what a previous run saved.
func (s *Service) newPresenceTracker() *presenceTracker {
	cfg := s.cfg
	tr := &presenceTracker{log: s.log, now: cfg.Now, reg: s.reg, dataDir: cfg.DataDir, leafSites: cfg.LeafSites,
		resyncInterval: cfg.ResyncInterval, reconnectRate: cfg.ReconnectRate, hintInterval: cfg.HintInterval,
		resyncNow: make(chan struct{}, 1), snapWork: newFairQueue(snapshotQueue)}
	tr.dialFleet = func(name string) (*nats.Conn, error) { return s.dial(name, s.keys.Fleet) }
	tr.markLinks, tr.checkLinks, tr.onRefused = s.links.mark, s.checkLinks, s.auditRefused
	tr.closeSession = s.sessionFlood
	tr.limited = s.limitedN
	tr.snapLimit = newOpLimiter("presence snapshot", "snapshot", cfg.SnapshotRate, cfg.SnapshotBurst, cfg.Now)
	tr.legacySnapLimit = newOpLimiter("presence snapshot", "snapshot", cfg.SnapshotRate, cfg.SnapshotBurst, cfg.Now)
	if tr.legacySnapLimit != nil {
		tr.legacySnapLimit.whose = "shared by everyone asking on " + fleet.PresenceSnapshotSubject +
			" (ask on " + fleet.CtlRoot + ".<your key>." + fleet.OpPresenceSnapshot + " for a limit of your own, as cc-bench does)"
	}
	tr.state = newPresence(s.reg.Labels, tr.publishEvent)
	tr.state.now = cfg.Now
	tr.locate = cfg.Locate
	tr.sessions = newSessionPresence(cfg.Now, tr.publishSessionEvent)
	tr.sessions.locate, tr.sessions.kick = cfg.Locate, s.kickSessions(tr.kick)
	tr.sessSnapLimit = newOpLimiter("session snapshot", "snapshot", cfg.SnapshotRate, cfg.SnapshotBurst, cfg.Now)
	tr.restorePresence()
	tr.leading.Store(true)
	return tr
}

// AdminKeyPath is where the first admin's seed is written.
func (s *Service) AdminKeyPath() string { return filepath.Join(s.cfg.DataDir, AdminKeyFile) }

// AdminCreated reports whether this start created the admin key.
func (s *Service) AdminCreated() bool { return s.adminCreated }

// Registry is the machine registry.
func (s *Service) Registry() *Registry { return s.reg }

// Keys are the service's own keys.
func (s *Service) Keys() *Keys { return s.keys }

// brokerTLSNames spell the external broker's TLS settings (cc-control's
// flags) in errors.
var brokerTLSNames = natstls.Names{CA: "--broker-tls-ca FILE", Cert: "--broker-tls-cert FILE --broker-tls-key FILE", Plaintext: "--broker-allow-plaintext"}

// ClientURL is the URL agents and operators connect to (the embedded
// broker's, or the external one).
func (s *Service) ClientURL() string { return s.url }

// Broker is the embedded broker, or nil with an external one.
func (s *Service) Broker() *broker.Broker { return s.broker }

// Start starts the embedded broker (unless external), connects, and begins
// answering the callout, tracking presence and serving the control API.
func (s *Service) Start(ctx context.Context) error {
	s.url = s.cfg.BrokerURL
	if s.url != "" {
		conn, err := natstls.Config{CAFile: s.cfg.BrokerTLSCA, CertFile: s.cfg.BrokerTLSCert, KeyFile: s.cfg.BrokerTLSKey,
			TLS: s.cfg.BrokerTLS, AllowPlaintext: s.cfg.BrokerAllowPlaintext, Names: brokerTLSNames}.Decide(s.url)
		if err != nil {
			return fmt.Errorf("control service: %w", err)
		}
		s.brokerConn = conn
	} else {
		bc := s.cfg.Broker
		auth, err := s.keys.BrokerAuth()
		if err != nil {
			return err
		}
		bc.Auth = auth
		if bc.StoreDir == "" && bc.ClusterListen == "" {
			// The audit stream lives here. A clustered broker needs a
			// JetStream cluster (server names, --store-dir on each).
			bc.StoreDir = filepath.Join(s.cfg.DataDir, "jetstream")
		}
		if bc.Logger == nil {
			bc.Logger = s.log.With("component", "broker")
		}
		// The client port opens once the callout, presence and the API
		// answer (startServing): a client that connects the moment
		// cc-control starts is admitted and served, never told that no
		// control service answered.
		bc.DeferListen = true
		b, err := broker.New(bc)
		if err != nil {
			return err
		}
		if err := b.Start(); err != nil {
			return err
		}
		s.broker = b
		s.url = "nats://" + bc.WithDefaults().Listen // the port is known once it listens
	}
	if err := s.connect(); err != nil {
		s.Close()
		return err
	}
	if err := s.openRegistry(ctx); err != nil {
		s.Close()
		return err
	}
	if err := s.startServing(ctx); err != nil {
		s.Close()
		return err
	}
	s.warnOrigins(s.reg.Apps()...)
	return nil
}

// dial opens one of the service's connections to its broker as kp, the
// way every one of them goes: in process to its own TLS broker, or with
// the TLS an external broker needs.
func (s *Service) dial(name string, kp nkeys.KeyPair, extra ...nats.Option) (*nats.Conn, error) {
	pub, _ := kp.PublicKey()
	opts := append([]nats.Option{
		nats.Name(name), nats.Nkey(pub, kp.Sign), nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond), nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.Timeout(5 * time.Second),
	}, extra...)
	url, inProcess := s.embeddedDial()
	opts = append(append(opts, s.cfg.NATSOptions...), inProcess...)
	if s.brokerConn != nil {
		opts = append(opts, s.brokerConn.Options(nil, 5*time.Second)...)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		if s.brokerConn != nil {
			err = s.brokerConn.Explain(err, s.url)
		}
		return nil, fmt.Errorf("control service %s connection to %s: %w", name, s.url, err)
	}
	return nc, nil
}

func (s *Service) connect() error {
	var err error
	dial := s.dial
	onReconnect := nats.ReconnectHandler(func(*nats.Conn) {
		s.log.Info("reconnected to broker; re-syncing presence")
		s.presence.resyncSoon()
	})
	if s.sys, err = dial("cc-control-sys", s.keys.Sys, onReconnect); err != nil {
		return err
	}
	// The registry's watch is on this connection: after a reconnect it
	// starts again at once rather than after missed heartbeats.
	rewatch := nats.ReconnectHandler(func(*nats.Conn) { s.reg.rewatch() })
	// The callout, registry and audit share this connection: closed for
	// good while serving, /healthz fails and this says why.
	closed := nats.ClosedHandler(func(nc *nats.Conn) {
		if !s.stopping.Load() {
			s.log.Error("the control connection (callout, registry, audit) was closed and is not coming back: "+
				"nobody new is admitted and the registry cannot change; restart cc-control", "error", nc.LastError())
		}
	})
	if s.ctl, err = dial("cc-control-auth", s.keys.Control, rewatch, closed); err != nil {
		return err
	}
	if s.fl, err = dial("cc-control-fleet", s.keys.Fleet); err != nil {
		return err
	}
	if s.calls, err = dial("cc-control-calls", s.keys.Calls, nats.NoEcho(), nats.ErrorHandler(s.callsAsyncError)); err != nil {
		return err
	}
	if s.announce, err = dial("cc-control-announce", s.keys.Announce); err != nil {
		return err
	}
	return nil
}

// embeddedDial connects the service to its own embedded broker in
// process: its client port opens only once the service answers, the
// service needs no certificate of its own when that port requires TLS,
// and nothing crosses a socket. The URL is nats:// (not the broker's
// tls://, which would ask for TLS in process); nothing dials it.
func (s *Service) embeddedDial() (string, []nats.Option) {
	if s.broker == nil {
		return s.url, nil
	}
	return "nats://in-process.invalid:4222", []nats.Option{nats.InProcessServer(s.broker.Server())}
}

func (s *Service) startServing(ctx context.Context) error {
	// The tracker closes connections (leaf links the callout replaces,
	// removed identities) before it starts following events.
	s.presence.sys, s.presence.fl, s.presence.announce = s.sys, s.fl, s.announce
	audit := newAuditLog(s.ctl, s.log.With("component", "audit"), s.cfg.Audit)
	audit.onDrop, audit.onSlow = s.metrics.auditDropped, s.metrics.slowConsumer
	audit.replica, audit.instance = s.cfg.ReplicaName, s.instance
	if err := audit.open(ctx, s.cfg.Audit.NotDurable, s.auditStore); err != nil {
		return err
	}
	s.mu.Lock()
	s.audit = audit
	s.mu.Unlock()
	audit.start()
	s.closers = append(s.closers, audit.close)
	if err := s.openHistory(ctx); err != nil {
		return err
	}
	stopCalls, err := s.watchCalls()
	if err != nil {
		return err
	}
	co := &callout{keys: s.keys, reg: s.reg, log: s.log.With("component", "callout"), ttl: s.cfg.UserTTL, siteTTL: s.cfg.SiteUserTTL, now: s.cfg.Now, readOnly: s.cfg.ReadOnlyFunctions}
	co.onGrant = func(kind, who string) {
		s.metrics.granted(kind, who)
		if kind == "operator" {
			s.presence.serveSnapshots(who)
		}
	}
	co.onRefuse = s.metrics.refused
	co.onAudit = s.auditRefusedAt
	gate, stopSharing, err := s.shareAdmissions(s.ctl, s.sessions, s.presence.sessions)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, stopSharing)
	co.sessions = sessionAdmission{
		gate:      gate,
		perIP:     newIPLimiter(cmp.Or(s.cfg.SessionRatePerIP, DefaultSessionRatePerIP), cmp.Or(s.cfg.SessionBurstPerIP, DefaultSessionBurstPerIP), maxSessionIPs, s.cfg.Now),
		maxPerApp: cmp.Or(s.cfg.MaxSessionsPerApp, DefaultMaxSessionsPerApp),
		maxPerIP:  max(0, cmp.Or(s.cfg.MaxSessionsPerIP, DefaultMaxSessionsPerIP)),
		locate:    s.cfg.Locate,
		now:       s.sessionNow,
	}
	co.sessions.maxPayload = s.sessionMaxPayload()
	s.sessionIPs.Store(co.sessions.perIP)
	co.sites, co.onLink = map[string]string{}, s.onLeafLink
	co.linkSize = newLinkSize(s.ctl.MaxPayload) // the callout answers on s.ctl
	for _, site := range s.cfg.LeafSites {
		co.sites[site.Name] = site.PasswordBcrypt
		if sum, ok := site.Verifier(); ok {
			if co.siteSums == nil {
				co.siteSums = map[string][sha256.Size]byte{}
			}
			co.siteSums[site.Name] = sum
		}
	}
	if s.cfg.MaxAgentConnections >= 0 {
		co.limit = newConnLimiter(cmp.Or(s.cfg.MaxAgentConnections, DefaultMaxAgentConnections), time.Now, s.presence.state.machineConns)
		s.presence.limit = co.limit
	}
	rctx, cancel := context.WithCancel(ctx)
	s.closers = append(s.closers, cancel)
	stopLease := s.leadPresence(rctx)
	s.closers = append(s.closers, stopLease)
	// The call watcher stops (recording the calls still open) before the
	// lease is given up: as the publisher, so its records are written.
	s.closers = append(s.closers, stopCalls)
	stopPresence, err := s.presence.start(rctx)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, stopPresence)
	api, err := s.serveAPI()
	if err != nil {
		return err
	}
	s.closers = append(s.closers, func() { _ = api.Stop() })
	// The loop ends before the last flush: nothing writes the registry
	// after Close.
	fctx, fcancel := context.WithCancel(rctx)
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		s.flushLoop(fctx)
	}()
	s.closers = append(s.closers, func() {
		fcancel()
		<-flushed
		_ = s.reg.FlushPending()
	})
	// The callout answers last, once presence and the API do: a client
	// it admits finds them serving (with an external broker too, where
	// clients may connect while this service starts).
	_, stop, err := co.subscribe(s.ctl)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, stop)
	for _, nc := range []*nats.Conn{s.sys, s.ctl, s.fl} {
		if err := nc.Flush(); err != nil {
			return err
		}
	}
	if s.broker != nil {
		if err := s.broker.Listen(); err != nil {
			return err
		}
		s.url = s.broker.ClientURL()
	}
	s.ready.Store(true)
	s.log.Info("control service ready", "url", s.url, "data", s.cfg.DataDir)
	return nil
}

// Ready reports whether the service answers: Start has returned, the
// callout, presence and the control API serve, the embedded broker's
// client port is open, and the broker connections are up. Close ends it.
func (s *Service) Ready() bool {
	return s.ready.Load() && !s.stopping.Load() && s.healthy() == nil
}

// limited takes one of operator key's tokens from l and reports whether
// the request was refused. A refused request is answered 429 on reply
// (within the operator's answered refusals; past them it is dropped),
// counted, and logged now and then.
func (s *Service) limited(l *opLimiter, key, reply string) bool {
	return s.limitedN(s.fl, l, key, reply, 1)
}

// limitedN is limited for a request that costs cost tokens, answered on
// nc.
func (s *Service) limitedN(nc *nats.Conn, l *opLimiter, key, reply string, cost int) bool {
	r := l.allowN(key, cost)
	if r == nil {
		return false
	}
	s.metrics.limitedRequest(l.kind)
	if r.Log {
		name := key
		if o, ok := s.reg.OperatorByKey(key); ok {
			name = o.Name
		}
		s.log.Warn("operator over its request limit; refused", "operator", name, "limit", l.kind,
			"refused", r.Count, "error", r.Err.Description)
	}
	if r.Answer {
		s.replyErrorRetry(nc, reply, r.Err, r.Wait)
	}
	return true
}

// replyErrorRetry sends err to reply on nc, saying, when wait is set,
// when to retry (fleet.HeaderRetryAfter), for the SDK to wait and retry
// by itself.
func (s *Service) replyErrorRetry(nc *nats.Conn, reply string, err *fleet.Error, wait time.Duration) {
	sendError(nc, reply, err, wait)
}

// sendError sends err to reply on nc, in the micro error headers, saying,
// when wait is set, when to retry (fleet.HeaderRetryAfter).
func sendError(nc *nats.Conn, reply string, err *fleet.Error, wait time.Duration) {
	m := nats.NewMsg(reply)
	m.Header.Set(fleet.HeaderErrorCode, strconv.Itoa(err.Code))
	m.Header.Set(fleet.HeaderError, err.Description)
	if wait > 0 {
		m.Header.Set(fleet.HeaderRetryAfter, strconv.FormatInt(wait.Milliseconds(), 10))
	}
	_ = nc.PublishMsg(m)
}

// flushLoop writes newly pending machines every few seconds (to the
// bucket, shortly after: another replica may be asked to accept one).
func (s *Service) flushLoop(ctx context.Context) {
	every := 2 * time.Second
	if s.reg.inBucket() {
		every = pendingFlushKV
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.reg.FlushPending(); err != nil {
				s.log.Error("writing pending machines failed", "error", err)
			}
		}
	}
}

// Snapshot is the current ONLINE list.
func (s *Service) Snapshot() fleet.PresenceSnapshot { return s.presence.state.snapshot() }

// OnlineCount is the number of machines ONLINE (cheaper than Snapshot).
func (s *Service) OnlineCount() int { return s.presence.state.count() }

// OperatorConnections is how many live connections operator name has, as
// the broker's events have reported them to the service.
func (s *Service) OperatorConnections(name string) int {
	return s.presence.operatorConnections(name)
}

// Close stops serving, closes the connections and the embedded broker.
func (s *Service) Close() {
	s.stopping.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
	for _, nc := range []*nats.Conn{s.announce, s.calls, s.fl, s.ctl, s.sys} {
		if nc != nil {
			nc.Close()
		}
	}
	if s.broker != nil {
		s.broker.Shutdown()
		s.broker = nil
	}
}

// Logger is the service's logger.
func (s *Service) Logger() *slog.Logger { return s.log }
