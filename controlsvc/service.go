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
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/natstls"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Version is the control service's version.
var Version = "0.1.0"

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
	// Audit bounds the audit logs and says whether the service may start
	// without a durable audit.
	Audit  AuditConfig
	Logger *slog.Logger
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
	cfg      Config
	log      *slog.Logger
	keys     *Keys
	reg      *Registry
	presence *presence
	broker   *broker.Broker
	url      string
	// admitMu orders adding a connection to presence (after checking its
	// identity is on record) against removing an identity (and then
	// listing its connections to close), so neither misses the other.
	admitMu sync.Mutex

	sys, ctl, fl *nats.Conn
	closers      []func()
	mu           sync.Mutex
	resyncNow    chan struct{}
	adminCreated bool
	metrics      *metrics
	audit        *auditLog
	callHooks    []CallHook
	snapCache    snapCache
	snapWork     *fairQueue
	snapConns    snapshotConns
	calls        *nats.Conn
	// announce publishes presence events and hints (and serves nothing).
	announce *nats.Conn
	// limit bounds each machine's connections; connect events feed it.
	limit *connLimiter
	// brokerConn is how the service reaches an external broker (nil:
	// its own embedded one).
	brokerConn *natstls.Decision
	// links are the remote sites' live leaf links.
	links leafLinks
	// snapLimit and ctlLimit are the per-operator request limits;
	// legacySnapLimit is one bucket (legacySnapshotKey) shared by every
	// snapshot asked on the unattributed fleet.PresenceSnapshotSubject.
	snapLimit, legacySnapLimit, ctlLimit *opLimiter
	// sites bounds what each remote site can make the service do.
	sites siteWork
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
	if cfg.CallWait <= 0 {
		cfg.CallWait = DefaultCallWait
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
	reg, err := OpenRegistry(filepath.Join(cfg.DataDir, RegistryFile))
	if err != nil {
		return nil, err
	}
	reg.now = cfg.Now
	s := &Service{cfg: cfg, log: cfg.Logger, keys: keys, reg: reg, resyncNow: make(chan struct{}, 1), snapWork: newFairQueue(snapshotQueue)}
	reg.onSites = s.onSitesChanged
	s.snapLimit = newOpLimiter("presence snapshot", "snapshot", cfg.SnapshotRate, cfg.SnapshotBurst, cfg.Now)
	s.legacySnapLimit = newOpLimiter("presence snapshot", "snapshot", cfg.SnapshotRate, cfg.SnapshotBurst, cfg.Now)
	if s.legacySnapLimit != nil {
		s.legacySnapLimit.whose = "shared by everyone asking on " + fleet.PresenceSnapshotSubject +
			" (ask on " + fleet.CtlRoot + ".<your key>." + fleet.OpPresenceSnapshot + " for a limit of your own, as cc-bench does)"
	}
	s.ctlLimit = newOpLimiter("control API", "control", cfg.ControlRate, cfg.ControlBurst, cfg.Now)
	s.presence = newPresence(reg.Labels, s.publishEvent)
	s.presence.now = cfg.Now
	s.restorePresence()
	s.metrics = newMetrics(s)
	s.callHooks = append(s.callHooks, s.metrics.call)
	if err := s.ensureAdmin(); err != nil {
		return nil, err
	}
	return s, nil
}

// ensureAdmin creates <data>/admin.nk and registers it as operator "admin"
// when the registry has no operator yet. On every later start an admin.nk
// that group or others can read is refused too: it is an admin's identity,
// whoever can read it is an admin.
func (s *Service) ensureAdmin() error {
	if len(s.reg.Operators()) > 0 {
		return checkSeedMode(s.AdminKeyPath())
	}
	kp, err := LoadOrCreateSeed(s.AdminKeyPath(), nkeys.CreateUser)
	if err != nil {
		return err
	}
	pub, _ := kp.PublicKey()
	if _, err := s.reg.AddOperator("admin", pub, fleet.RoleAdmin); err != nil {
		return err
	}
	s.adminCreated = true
	return nil
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
		b, err := broker.New(bc)
		if err != nil {
			return err
		}
		if err := b.Start(); err != nil {
			return err
		}
		s.broker = b
		s.url = b.ClientURL()
	}
	if err := s.connect(); err != nil {
		s.Close()
		return err
	}
	if err := s.startServing(ctx); err != nil {
		s.Close()
		return err
	}
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
		select {
		case s.resyncNow <- struct{}{}:
		default:
		}
	})
	if s.sys, err = dial("cc-control-sys", s.keys.Sys, onReconnect); err != nil {
		return err
	}
	if s.ctl, err = dial("cc-control-auth", s.keys.Control); err != nil {
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
// process when that broker's client port requires TLS: the service needs
// no certificate of its own, and nothing crosses a socket. The URL is
// nats://, not the broker's tls://, which would ask for TLS in process.
func (s *Service) embeddedDial() (string, []nats.Option) {
	if s.broker == nil || !s.broker.TLSRequired() {
		return s.url, nil
	}
	return "nats://" + s.broker.Server().Addr().String(), []nats.Option{nats.InProcessServer(s.broker.Server())}
}

func (s *Service) startServing(ctx context.Context) error {
	audit := newAuditLog(s.ctl, s.log.With("component", "audit"), s.cfg.Audit)
	audit.onDrop, audit.onSlow = s.metrics.auditDropped, s.metrics.slowConsumer
	if err := audit.open(ctx, s.cfg.Audit.NotDurable, s.auditStore); err != nil {
		return err
	}
	s.mu.Lock()
	s.audit = audit
	s.mu.Unlock()
	audit.start()
	s.closers = append(s.closers, audit.close)
	if err := s.watchCalls(); err != nil {
		return err
	}
	co := &callout{keys: s.keys, reg: s.reg, log: s.log.With("component", "callout"), ttl: s.cfg.UserTTL, siteTTL: s.cfg.SiteUserTTL, now: s.cfg.Now, readOnly: s.cfg.ReadOnlyFunctions}
	co.onGrant = func(kind, who string) {
		s.metrics.granted(kind, who)
		if kind == "operator" {
			s.serveSnapshots(who)
		}
	}
	co.onRefuse = s.metrics.refused
	co.onAudit = s.auditRefusedAt
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
		s.limit = newConnLimiter(cmp.Or(s.cfg.MaxAgentConnections, DefaultMaxAgentConnections), time.Now, s.presence.machineConns)
		co.limit = s.limit
	}
	_, stop, err := co.subscribe(s.ctl)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, stop)
	rctx, cancel := context.WithCancel(ctx)
	s.closers = append(s.closers, cancel)
	stopEvents, err := s.watchEvents(rctx, s.sys)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, stopEvents)
	// Remote sites are resynced in the background: a site cannot hold
	// up the start (sysevents.go, resyncParts).
	if err := s.resyncParts(rctx, false); err != nil {
		return fmt.Errorf("initial presence snapshot: %w", err)
	}
	s.savePresence()
	s.closers = append(s.closers, s.savePresence)
	s.snapshotWorkers(rctx)
	snapSub, err := s.fl.QueueSubscribe(fleet.PresenceSnapshotSubject, "cc-control", s.answerSnapshot)
	if err != nil {
		return err
	}
	// A flood waits here, not in the broker, and is worked off at a map
	// lookup per request.
	_ = snapSub.SetPendingLimits(-1, 256<<20)
	s.closers = append(s.closers, func() { _ = snapSub.Unsubscribe() })
	s.serveConnectedOperators()
	s.closers = append(s.closers, s.closeSnapshotConns)
	go s.snapshotConnsLoop(rctx)
	api, err := s.serveAPI()
	if err != nil {
		return err
	}
	s.closers = append(s.closers, func() { _ = api.Stop() })
	go s.resyncLoop(rctx)
	go s.flushLoop(rctx)
	go s.hintLoop(rctx)
	s.closers = append(s.closers, func() { _ = s.reg.FlushPending() })
	for _, nc := range []*nats.Conn{s.sys, s.ctl, s.fl} {
		if err := nc.Flush(); err != nil {
			return err
		}
	}
	s.log.Info("control service ready", "url", s.url, "data", s.cfg.DataDir)
	return nil
}

// legacySnapshotKey is the one bucket of legacySnapLimit.
const legacySnapshotKey = "anyone on " + fleet.PresenceSnapshotSubject

// answerSnapshot answers a snapshot request on the unattributed
// fleet.PresenceSnapshotSubject (the SDK asks on
// ctl.<key>.presence.snapshot, see serveSnapshots), best effort. Whoever
// sent it is not known: it names a reply in an operator's control inbox,
// which only that operator can read, but any operator may name any
// operator's. So all of them share one bucket, which no operator's own
// subject uses: a flood there refuses only the legacy subject, for
// everyone, and never an operator's own snapshots; and naming many
// operators' inboxes does not multiply what the subject may cost.
func (s *Service) answerSnapshot(m *nats.Msg) {
	owner, ok := fleet.InboxOwner(m.Reply)
	if !ok || !strings.HasPrefix(m.Reply, fleet.ControlInbox(owner)+".") {
		// Only an operator's control inbox is a place to answer; the
		// broker would refuse anything else from this connection too.
		return
	}
	if _, ok := s.reg.OperatorByKey(owner); !ok {
		return // nobody can read that inbox
	}
	if s.limitedN(s.fl, s.legacySnapLimit, legacySnapshotKey, m.Reply, s.snapshotParts()) {
		return
	}
	// Queued apart from the owner's own requests on its control
	// subject: whoever sent this may not be the owner.
	s.queueSnapshot("inbox "+owner, m.Reply)
}

// snapshotParts is how many parts a snapshot has now: what it costs
// against the operator's snapshot limit, so the limit bounds bytes on a
// large fleet too.
func (s *Service) snapshotParts() int {
	return max(1, (s.presence.count()+fleet.SnapshotChunk-1)/fleet.SnapshotChunk)
}

// Snapshots admitted wait in a fairQueue, one queue per asker, for
// snapshotWorkers to send them.
const (
	// snapshotQueue bounds the snapshots one asker may have waiting.
	snapshotQueue   = 256
	snapshotWorkers = 4
)

// queueSnapshot queues the snapshot for reply as owner's; with owner's
// queue full it is answered 503.
func (s *Service) queueSnapshot(owner, reply string) {
	if !s.snapWork.push(owner, reply) {
		s.replyError(s.fl, reply, fleet.Errorf(fleet.CodeUnavailable, "%d presence snapshots for this operator are already waiting to be sent; retry in a second", snapshotQueue))
	}
}

// snapshotWorkers sends the queued snapshots, each asker in turn, until
// ctx ends.
func (s *Service) snapshotWorkers(ctx context.Context) {
	go func() {
		<-ctx.Done()
		s.snapWork.close()
	}()
	for range snapshotWorkers {
		go func() {
			for {
				reply, ok := s.snapWork.pop()
				if !ok {
					return
				}
				s.sendSnapshot(s.fl, reply)
			}
		}()
	}
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

// replyError sends err to reply on nc, in the micro error headers.
func (s *Service) replyError(nc *nats.Conn, reply string, err *fleet.Error) {
	s.replyErrorRetry(nc, reply, err, 0)
}

// replyErrorRetry is replyError saying, when wait is set, when to retry
// (fleet.HeaderRetryAfter), for the SDK to wait and retry by itself.
func (s *Service) replyErrorRetry(nc *nats.Conn, reply string, err *fleet.Error, wait time.Duration) {
	m := nats.NewMsg(reply)
	m.Header.Set(fleet.HeaderErrorCode, strconv.Itoa(err.Code))
	m.Header.Set(fleet.HeaderError, err.Description)
	if wait > 0 {
		m.Header.Set(fleet.HeaderRetryAfter, strconv.FormatInt(wait.Milliseconds(), 10))
	}
	_ = nc.PublishMsg(m)
}

// sendSnapshot publishes the ONLINE list to reply on nc, in parts of at most
// fleet.SnapshotChunk servers when the fleet is large. Every broadcast a
// workbench makes starts with this request, so each server's entry is
// encoded once and reused until presence or the registry changes; only
// the envelope (with the current time) is written per request.
func (s *Service) sendSnapshot(nc *nats.Conn, reply string) {
	seq, epoch, entries := s.snapshotEntries()
	now, _ := json.Marshal(s.cfg.Now().UTC())
	parts := max(1, (len(entries)+fleet.SnapshotChunk-1)/fleet.SnapshotChunk)
	for i := range parts {
		chunk := entries[min(len(entries), i*fleet.SnapshotChunk):min(len(entries), (i+1)*fleet.SnapshotChunk)]
		b := make([]byte, 0, 64+len(now)+len(chunk)*160)
		b = append(b, `{"seq":`...)
		b = strconv.AppendUint(b, seq, 10)
		b = append(b, `,"epoch":"`...)
		b = append(b, epoch...)
		b = append(b, `","servers":[`...)
		for j, e := range chunk {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(b, e...)
		}
		b = append(b, `],"time":`...)
		b = append(b, now...)
		if parts > 1 {
			b = append(b, `,"part":`...)
			b = strconv.AppendInt(b, int64(i+1), 10)
			b = append(b, `,"parts":`...)
			b = strconv.AppendInt(b, int64(parts), 10)
		}
		b = append(b, '}')
		if err := nc.Publish(reply, b); err != nil {
			s.log.Warn("snapshot reply not sent", "error", err)
			return
		}
	}
}

// snapCache holds each ONLINE server's snapshot entry, encoded.
type snapCache struct {
	mu        sync.Mutex
	presVer   uint64
	regChange uint64
	valid     bool
	seq       uint64
	epoch     string
	entries   [][]byte
}

// snapshotEntries returns the snapshot's seq and its servers' entries,
// encoded, renewing them when presence or the registry changed.
func (s *Service) snapshotEntries() (uint64, string, [][]byte) {
	c := &s.snapCache
	c.mu.Lock()
	defer c.mu.Unlock()
	pv, rv := s.presence.version(), s.reg.changes.Load()
	if c.valid && c.presVer == pv && c.regChange == rv {
		return c.seq, c.epoch, c.entries
	}
	snap := s.presence.snapshot()
	entries := make([][]byte, len(snap.Servers))
	for i, sv := range snap.Servers {
		entries[i], _ = json.Marshal(sv)
	}
	// Versions read before the snapshot: a change in between renews the
	// cache on the next request rather than hiding.
	c.presVer, c.regChange, c.valid, c.seq, c.epoch, c.entries = pv, rv, true, snap.Seq, snap.Epoch, entries
	return c.seq, c.epoch, c.entries
}

func (s *Service) resyncLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.ResyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.resyncNow:
		}
		// Sites' parts go on in the background (one at a time per site):
		// a slow site does not hold up the hub's next resync.
		if err := s.resyncParts(ctx, false); err != nil && ctx.Err() == nil {
			s.log.Warn("presence resync failed", "error", err)
		}
		s.savePresence()
	}
}

// hintLoop tells the agents how to spread a reconnection (fleet.AgentHint):
// at once when the window moved by a fifth or more since the last hint,
// and every HintInterval for agents that connected since.
func (s *Service) hintLoop(ctx context.Context) {
	t := time.NewTicker(min(2*time.Second, s.cfg.HintInterval))
	defer t.Stop()
	var sent time.Duration
	var at time.Time
	for {
		online := s.presence.count()
		w := ReconnectWindow(online, s.cfg.ReconnectRate)
		if moved := w - sent; s.cfg.Now().Sub(at) >= s.cfg.HintInterval || moved > sent/5 || -moved > sent/5 {
			b, _ := json.Marshal(fleet.AgentHint{ReconnectWindowMS: w.Milliseconds(), Online: online})
			if s.announce != nil && s.announce.Publish(fleet.AgentHintSubject, b) == nil {
				sent, at = w, s.cfg.Now()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ReconnectWindow is how long a fleet of online machines should spread its
// reconnection over for the callout to admit them at rate per second,
// with a quarter of headroom; at least half a second, at most ten minutes.
func ReconnectWindow(online int, rate float64) time.Duration {
	w := time.Duration(float64(online) / rate * 1.25 * float64(time.Second))
	return min(max(w, 500*time.Millisecond), 10*time.Minute)
}

// flushLoop writes newly pending machines to disk every few seconds.
func (s *Service) flushLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
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

func (s *Service) publishEvent(ev fleet.PresenceEvent) {
	s.log.Info("presence", "event", ev.Event, "machine", ev.Machine, "reason", ev.Reason)
	b, _ := json.Marshal(ev)
	if s.announce != nil {
		_ = s.announce.Publish(fleet.PresenceEventSubject(ev.Event, ev.Machine), b)
	}
}

// Snapshot is the current ONLINE list.
func (s *Service) Snapshot() fleet.PresenceSnapshot { return s.presence.snapshot() }

// OnlineCount is the number of machines ONLINE (cheaper than Snapshot).
func (s *Service) OnlineCount() int { return s.presence.count() }

// OperatorConnections is how many live connections operator name has, as
// the broker's events have reported them to the service.
func (s *Service) OperatorConnections(name string) int {
	return len(s.presence.connsOf(operatorUserPrefix + name))
}

// Close stops serving, closes the connections and the embedded broker.
func (s *Service) Close() {
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
