// Package agent is what runs on every server: it connects to the broker
// with the machine's own nkey and, as connection name, the machine id and
// its host's facts (facts.go, fleet.EncodeFactsName), and
// serves the client functions of package functions as the nats micro
// service cc-agent, on its own subjects and the broadcast ones.
//
// It never links nats-server: a test in this module keeps it that way.
package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/custom"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/natstls"
	"github.com/commandcontrol/commandcontrol/internal/version"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Version is the agent's version and commit (internal/version), reported
// by machine-info.
var Version = version.Get().String()

// Defaults.
const (
	DefaultCallTimeout       = 30 * time.Second
	DefaultMaxConcurrent     = 32
	DefaultMaxReconnectDelay = 5 * time.Second
	// DefaultConnectTimeout bounds dialling plus the handshake, auth
	// callout included. It is longer than the broker's auth timeout (5 s
	// by default) on purpose: a client that gives up first leaves the
	// broker and the control service finishing an authorisation nobody
	// waits for, and under a reconnect storm those orphans are most of
	// the work (nats.go's default is 2 s).
	DefaultConnectTimeout = 10 * time.Second
)

// Config configures an agent.
type Config struct {
	// URL of the broker (comma-separated for several).
	URL string
	// TLSCA is a PEM file of the CA that signed the broker's certificate:
	// the agent then speaks TLS and verifies the broker against it. A
	// tls:// URL turns TLS on too (verified against the system's roots).
	TLSCA string
	// TLSCert and TLSKey are the machine's client certificate, for a
	// broker that requires mutual TLS.
	TLSCert, TLSKey string
	// TLS is a ready TLS configuration (TLSCA and TLSCert add to a copy).
	TLS *tls.Config
	// AllowPlaintext lets the agent speak plain text to a broker off this
	// host (a network you trust). Without it, and without TLS, New
	// refuses a URL that is not loopback.
	AllowPlaintext bool
	// KeyFile holds the machine's nkey seed; created on first start.
	KeyFile string
	// Key, when set, is used instead of KeyFile (the swarm simulator).
	Key nkeys.KeyPair
	// MachineID overrides <primary IP>_<hostname>.
	MachineID string
	// Root is the filesystem root functions read under (default "/").
	Root string
	// Functions overrides the built-in set (tests, simulators).
	Functions *functions.Set
	// CallTimeout bounds one function call.
	CallTimeout time.Duration
	// MaxConcurrent bounds calls running at once; more are refused with 503.
	MaxConcurrent int
	// MaxReconnectDelay caps the jittered reconnect backoff.
	MaxReconnectDelay time.Duration
	// ConnectTimeout bounds one connection attempt (dial and handshake).
	ConnectTimeout time.Duration
	// NoSamplers skips the functions' background samplers (a swarm of
	// simulated agents shares one machine and needs none).
	NoSamplers bool
	// OnConnect is called each time the connection is (re)established.
	OnConnect func()
	// NATSOptions are appended to the agent's connection options.
	NATSOptions []nats.Option
	// Dialer opens the agent's sockets (e.g. with a source address, for
	// simulators); nil uses a plain one.
	Dialer *net.Dialer
	// FunctionsDir holds operators' function definitions (*.json, see
	// docs/FUNCTIONS.md); empty for none. They are loaded on Start and
	// reloaded when a file changes (polled every FunctionsPoll) or on
	// [Agent.Reload], without a restart.
	FunctionsDir string
	// FunctionsPoll is how often FunctionsDir is checked for changes
	// (0: custom.DefaultReloadInterval; negative: only on Reload).
	FunctionsPoll time.Duration
	// CallerRate and CallerBurst bound the calls one operator may start
	// on this agent (per second, sustained, and at once); more are
	// answered 429 (at most RefusalAnswerBurst at once and
	// RefusalAnswerRate a second, the rest dropped unanswered). Zero: DefaultCallerRate, DefaultCallerBurst; a
	// negative rate: unlimited.
	CallerRate  float64
	CallerBurst float64
	// Facts, when set, is what the agent reports about its host instead of
	// what it reads (GatherFacts under Root): simulators, tests. A nil
	// answer reports none.
	Facts func(context.Context) *fleet.Facts
	// FactsInterval is how often the facts are read again, to report
	// them when they changed (0: DefaultFactsInterval; negative: never).
	FactsInterval time.Duration
	// FactsTicks, when set, reads the facts again on each value instead
	// of every FactsInterval (tests).
	FactsTicks <-chan time.Time
	// Now is the clock the rate limits, the refusal log's pacing, the
	// micro statistics' processing times and the built-in functions read
	// (nil: time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Agent is one machine's agent.
type Agent struct {
	cfg Config
	log *slog.Logger
	key nkeys.KeyPair
	pub string
	id  string
	fns *functions.Set
	sem chan struct{}
	// calls catches re-sent copies of a call (fleet.HeaderCallID).
	calls *recentCalls
	// share bounds each caller's rate and slots.
	share *fairShare
	// tok is the machine's subject token.
	tok string
	// connMu guards nc, svc and closed: Close may run while Start is
	// still connecting.
	connMu      sync.Mutex
	nc          *nats.Conn
	svc         *service
	closed      bool
	mu          sync.Mutex
	lastRefusal time.Time
	sign        nats.SignatureHandler
	created     bool
	reload      chan struct{}
	// window is the reconnect window (ns) the control service last hinted.
	window atomic.Int64
	// conn is how the agent reaches the broker: TLS, or plain text on
	// loopback (or explicitly allowed).
	conn *natstls.Decision
	// link is nc's state (guarded by connMu); facts what nc's name reports.
	link  *connLink
	facts atomic.Pointer[fleet.Facts]
	// pending is the connection refreshFacts is waiting on (nil: none).
	pending *nats.Conn
}

// connLink is the agent's state of one of its connections.
type connLink struct {
	// retired: the agent is replacing the connection (refreshFacts); it
	// no longer reconnects on its own.
	retired atomic.Bool
	// connected is closed once it connects, closed once it is closed
	// (both nil: not waited for).
	connected, closed chan struct{}
	upOnce, downOnce  sync.Once
}

func newConnLink() *connLink {
	return &connLink{connected: make(chan struct{}), closed: make(chan struct{})}
}

func (l *connLink) up()   { l.upOnce.Do(func() { close(l.connected) }) }
func (l *connLink) down() { l.downOnce.Do(func() { close(l.closed) }) }

// New loads or creates the machine's key and works out its machine id.
func New(cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.URL == "" {
		cfg.URL = nats.DefaultURL
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent
	}
	if cfg.MaxReconnectDelay <= 0 {
		cfg.MaxReconnectDelay = DefaultMaxReconnectDelay
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.FactsInterval == 0 {
		cfg.FactsInterval = DefaultFactsInterval
	}
	conn, err := natstls.Config{CAFile: cfg.TLSCA, CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, TLS: cfg.TLS,
		AllowPlaintext: cfg.AllowPlaintext}.Decide(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{cfg: cfg, key: cfg.Key, sem: make(chan struct{}, cfg.MaxConcurrent), calls: newRecentCalls(recentCallIDs),
		reload: make(chan struct{}, 1), conn: conn}
	if a.key == nil {
		if cfg.KeyFile == "" {
			return nil, errors.New("agent: no key: pass --key FILE (it is created on first start)")
		}
		kp, created, err := LoadOrCreateKey(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		a.key, a.created = kp, created
	}
	a.pub, _ = a.key.PublicKey()
	a.sign = signerFor(a.key)
	a.id = cfg.MachineID
	if a.id == "" {
		id, err := DefaultMachineID()
		if err != nil {
			return nil, fmt.Errorf("agent: %w (pass --id)", err)
		}
		a.id = id
	}
	if err := fleet.ValidateMachineID(a.id); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.log = cfg.Logger.With("machine", a.id)
	a.tok = fleet.MachineToken(a.id)
	rate, burst := cfg.CallerRate, cfg.CallerBurst
	if rate == 0 {
		rate = DefaultCallerRate
	}
	if burst <= 0 {
		burst = DefaultCallerBurst
	}
	a.share = newFairShare(rate, burst, cfg.MaxConcurrent, cfg.Now)
	a.fns = cfg.Functions
	if a.fns == nil {
		a.fns = functions.New(&functions.Env{Root: cfg.Root, MachineID: a.id, Version: Version, Logger: a.log, Now: cfg.Now})
	}
	return a, nil
}

// MachineID is the id the agent connects as.
func (a *Agent) MachineID() string { return a.id }

// PublicKey is the machine's public nkey, as an operator registers it.
func (a *Agent) PublicKey() string { return a.pub }

// KeyCreated reports whether New created the key file.
func (a *Agent) KeyCreated() bool { return a.created }

// Run connects (retrying forever, also while refused) and serves until
// ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	a.Close()
	return nil
}

// Reload asks the agent to reload its operators' function definitions now
// (cc-agent does it on SIGHUP). It returns at once.
func (a *Agent) Reload() {
	select {
	case a.reload <- struct{}{}:
	default: // a reload is already pending
	}
}

// Start connects in the background and begins serving; it returns at once.
func (a *Agent) Start(ctx context.Context) error {
	if !a.cfg.NoSamplers {
		a.fns.Start(ctx)
	}
	if dir := a.cfg.FunctionsDir; dir != "" {
		ops := custom.NewLoader(a.fns)
		ops.LoadDir(dir)
		poll := a.cfg.FunctionsPoll
		if poll < 0 {
			poll = 1<<63 - 1 // never: reload on request only
		}
		go ops.WatchDir(ctx, dir, poll, a.reload, nil)
	}
	facts := a.readFacts(ctx)
	a.facts.Store(facts)
	link := newConnLink()
	nc, err := nats.Connect(a.cfg.URL, a.natsOptions(facts, link)...)
	if err != nil {
		return fmt.Errorf("agent: connect to %s: %w", a.cfg.URL, a.conn.Explain(err, a.cfg.URL))
	}
	a.connMu.Lock()
	defer a.connMu.Unlock()
	if a.closed {
		nc.Close()
		return errors.New("agent: closed before it connected")
	}
	a.nc, a.link = nc, link
	a.svc = a.newService(nc)
	if err := a.serveOn(nc, a.svc); err != nil {
		nc.Close()
		return err
	}
	go a.watchFacts(ctx)
	return nil
}

// natsOptions are the options of a connection reporting facts (its name,
// fleet.EncodeFactsName), whose state is link.
func (a *Agent) natsOptions(facts *fleet.Facts, link *connLink) []nats.Option {
	maxDelay := a.cfg.MaxReconnectDelay
	dialer := newClosingDialer(a.cfg.Dialer)
	opts := a.conn.Options(dialer, 0)
	sign := func(nonce []byte) ([]byte, error) {
		if link.retired.Load() {
			return nil, errRetired
		}
		return a.sign(nonce)
	}
	return append(append(opts,
		nats.Name(fleet.EncodeFactsName(a.id, facts)),
		nats.Nkey(a.pub, sign),
		nats.RetryOnFailedConnect(true),
		nats.Timeout(a.cfg.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.IgnoreAuthErrorAbort(),
		nats.PingInterval(20*time.Second),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			if link.retired.Load() {
				return time.Hour // until refreshFacts closes it or takes it back
			}
			return reconnectDelay(attempts, maxDelay, time.Duration(a.window.Load()))
		}),
		nats.ConnectHandler(func(*nats.Conn) {
			link.up()
			a.log.Info("connected; serving functions", "url", a.cfg.URL)
			if a.cfg.OnConnect != nil {
				a.cfg.OnConnect()
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			link.up()
			a.log.Info("reconnected")
			if a.cfg.OnConnect != nil {
				a.cfg.OnConnect()
			}
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			switch {
			case errors.Is(err, nats.ErrAuthExpired):
				a.log.Info("credentials expired; authorising again")
			case err != nil:
				a.log.Warn("disconnected", "error", err)
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { link.down() }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { a.connectError(err, dialer, true) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			a.subscriptionError(sub, err)
			a.connectError(err, dialer, false)
		}),
	), a.cfg.NATSOptions...)
}

// reconnectDelay is the pause before reconnection attempt n (from 1). The
// first is uniform over the fleet's reconnect window (fleet.AgentHint,
// half a second without a hint), so a fleet that lost its broker at the
// same moment comes back spread out rather than all at once; later ones
// back off exponentially with jitter up to the larger of maxDelay and
// the window.
func reconnectDelay(n int, maxDelay, window time.Duration) time.Duration {
	window = max(window, 500*time.Millisecond)
	if n <= 1 {
		return time.Duration(rand.Int64N(int64(window) + 1))
	}
	d := min(time.Duration(250<<min(n, 10))*time.Millisecond, max(maxDelay, window))
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// hint takes the control service's advice (fleet.AgentHint).
func (a *Agent) hint(m *nats.Msg) {
	var h fleet.AgentHint
	if json.Unmarshal(m.Data, &h) != nil || h.ReconnectWindowMS < 0 {
		return
	}
	a.window.Store(int64(min(time.Duration(h.ReconnectWindowMS)*time.Millisecond, 10*time.Minute)))
}

// ReconnectWindow is the reconnect window the control service last hinted
// (0 before any hint).
func (a *Agent) ReconnectWindow() time.Duration { return time.Duration(a.window.Load()) }

// CalloutSilence is how long after the agent's TCP connection a refusal
// must come for the agent to log it as no control service answering
// rather than this machine not being accepted: the broker refuses a
// connection whose auth callout nobody answers at its auth timeout
// (seconds), a control service refuses an unknown key in milliseconds.
const CalloutSilence = time.Second

// connectError logs why the broker refused us, with what to do about it,
// at most every 30 seconds; handshake tells an attempt to connect from
// an error on an established connection; dialer is the connection's.
func (a *Agent) connectError(err error, dialer *closingDialer, handshake bool) {
	if errors.Is(err, nats.ErrAuthExpired) {
		// Routine (cc-control --user-ttl, --site-user-ttl): the client
		// authorises again. Not a refusal, and it must not hold back the
		// message of a real one that may follow.
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.share.now()
	if now.Sub(a.lastRefusal) < 30*time.Second {
		return
	}
	a.lastRefusal = now
	refused := errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization")
	waited, dialled := dialer.sinceConnected()
	if handshake && dialled && ((refused && waited >= CalloutSilence) || errors.Is(err, nats.ErrTimeout)) {
		// The broker refuses a connection whose callout nobody answers
		// at its auth timeout, seconds after the dial; the control
		// service refuses an unknown key in milliseconds.
		a.log.Warn("the broker is up but no control service answered: cc-control is down or not connected to this broker; retrying",
			"url", a.cfg.URL, "refused_after", waited.Round(10*time.Millisecond).String(), "error", err)
		return
	}
	if refused {
		a.log.Warn("the broker refused this machine; retrying until it is accepted",
			"key", a.pub, "accept_with", "cc-bench machines accept "+a.id)
		return
	}
	var te *natstls.Error
	if errors.As(a.conn.Explain(err, a.cfg.URL), &te) {
		a.log.Error("cannot connect to the broker safely; retrying", "url", a.cfg.URL, "error", te.Error())
		return
	}
	a.log.Warn("cannot reach the broker; retrying", "url", a.cfg.URL, "error", err)
}

// errRetired fails the reconnection of a connection the agent replaces.
var errRetired = errors.New("agent: connection replaced by a newer one")

// newService describes the agent's micro service cc-agent on nc.
func (a *Agent) newService(nc *nats.Conn) *service {
	return newService(nc, a.log, a.id, a.tok, a.fns.Specs, a.share.now)
}

// serveOn registers svc (on nc) and the hint.
func (a *Agent) serveOn(nc *nats.Conn, svc *service) error {
	if _, err := nc.Subscribe(fleet.AgentHintSubject, a.hint); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return svc.serve(a.handle)
}

// subscriptionError counts an error the client library reported on one
// of the endpoints' subscriptions in the endpoint's statistics.
func (a *Agent) subscriptionError(sub *nats.Subscription, err error) {
	a.connMu.Lock()
	svc := a.svc
	a.connMu.Unlock()
	if svc != nil && sub != nil {
		svc.asyncError(sub, err)
	}
}

// handle dispatches one call, received at r, on its own goroutine so a
// slow function never holds up the others; past the caller's share of
// MaxConcurrent calls it answers 503 at once (within the caller's refusal
// answers, see refuse; past them it drops the call), and past
// MaxConcurrent calls while the caller is within its share it always
// answers 503. Instant functions (functions.Spec) are answered in place.
// Every path settles r once, for the endpoint's statistics.
// Replies are published directly on the subject fleet.AgentReply derives
// from the caller's reply subject (the broker lets this machine publish
// nowhere else): not through a micro.Request, which answers only on the
// reply subject itself and only before the handler returns.
func (a *Agent) handle(r receipt, m *nats.Msg) {
	subject, data := m.Subject, m.Data
	call, err := fleet.ParseFnSubject(subject)
	if err != nil || m.Reply == "" {
		// The broker delivers only well-formed call subjects; a call
		// without a reply subject has nowhere to be answered.
		if err == nil {
			err = fmt.Errorf("call on %s has no reply subject", subject)
		}
		r.settle(dropped{fleet.Errorf(fleet.CodeBadRequest, "%v", err), "nowhere to answer"})
		return
	}
	reply, err := fleet.AgentReply(m.Reply, call.Caller, a.tok)
	if err != nil {
		// The caller chose a reply subject this machine may not (or
		// must not) answer on; there is nowhere to send an error. It
		// costs the caller's rate like any call, and is logged at WARN
		// only within the caller's refusal budget: a flood of them (a
		// viewer's broadcasts) costs each agent a bounded log.
		_ = a.share.admit(call.Caller)
		if a.share.answer(call.Caller) {
			a.log.Warn("call refused: "+err.Error(), "subject", subject)
		} else {
			a.log.Debug("call refused: "+err.Error(), "subject", subject)
		}
		r.settle(dropped{fleet.Errorf(fleet.CodeBadRequest, "%v", err), "nowhere this machine may answer"})
		return
	}
	fn := call.Function
	// Ids are the caller's, keyed by the caller the broker checked, so
	// one operator cannot suppress another's call. An id is recorded once
	// its call runs (in place, or with a slot) or once it is answered a
	// refusal: the caller then holds a final answer for it, and a later
	// copy must not run behind that answer. A refusal dropped unanswered
	// (past the caller's refusal answers) leaves the id free, so the
	// workbench's re-sent copy runs once the agent has room.
	id := m.Header.Get(fleet.HeaderCallID)
	if len(id) <= fleet.MaxCallIDLen {
		r.callID = id // echoed in the answer, for the audit to match it
	}
	r.args = fleet.ArgsDigest(data)
	key := call.Caller + " " + id
	settled := func() {
		if id != "" && len(id) <= fleet.MaxCallIDLen {
			a.calls.first(key)
		}
	}
	// The caller's rate first: repeats of a call id cost the agent little,
	// but each is a call the audit must track.
	if err := a.share.admit(call.Caller); err != nil {
		if a.refuse(r, reply, fn, call.Caller, err) {
			settled()
		}
		return
	}
	if len(id) > fleet.MaxCallIDLen {
		a.reply(r, reply, fn, 0, nil, fleet.Errorf(fleet.CodeBadRequest, "the %s header is %d bytes; at most %d are allowed", fleet.HeaderCallID, len(id), fleet.MaxCallIDLen))
		return
	}
	if err := fleet.CheckCallID(reply, id); err != nil {
		// One call id, one call token: the audit tells calls apart by
		// the reply subject, so copies under one token must be one call.
		a.reply(r, reply, fn, 0, nil, fleet.Errorf(fleet.CodeBadRequest, "%v", err))
		return
	}
	if id != "" && a.calls.has(key) {
		a.repeat(r, subject, id)
		return
	}
	if f, ok := a.fns.Lookup(fn); !ok || f.Spec().Instant || len(data) > functions.MaxRequestSize {
		// Answered in place, in microseconds, without taking a slot: an
		// instant function (from memory: no goroutine, no timer), and a
		// call Call refuses before any work (an unknown function, an
		// oversized request), so its caller hears the precise error even
		// when the agent is busy.
		if id != "" && !a.calls.first(key) {
			a.repeat(r, subject, id)
			return
		}
		start := time.Now()
		res, err := a.fns.Call(context.Background(), fn, data)
		a.reply(r, reply, fn, time.Since(start), res, err)
		return
	}
	if !a.share.hold(call.Caller) {
		if a.refuse(r, reply, fn, call.Caller, fleet.Errorf(fleet.CodeUnavailable, "%s is busy: operator %s already has %d calls running here (its share); retry later", a.id, short(call.Caller), a.share.perCall)) {
			settled()
		}
		return
	}
	select {
	case a.sem <- struct{}{}:
	default:
		// The agent is full but this caller is within its share: the
		// others filled it. Always answered (not from this caller's
		// refusal answers, which those others would otherwise use up and
		// turn "busy" into silence); its caller's rate (admit) bounds
		// these answers.
		a.share.release(call.Caller)
		if id != "" && !a.calls.first(key) {
			a.repeat(r, subject, id) // a copy of it runs already
			return
		}
		a.reply(r, reply, fn, 0, nil, fleet.Errorf(fleet.CodeUnavailable, "%s is busy: all %d call slots are taken by other operators' calls; retry later", a.id, a.cfg.MaxConcurrent))
		return
	}
	if id != "" && !a.calls.first(key) {
		// Another copy of this call got its slot first (copies arrive on
		// the machine's subject and the broadcast one concurrently).
		<-a.sem
		a.share.release(call.Caller)
		a.repeat(r, subject, id)
		return
	}
	go func() {
		defer func() { <-a.sem; a.share.release(call.Caller) }()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.CallTimeout)
		defer cancel()
		res, err := a.fns.Call(ctx, fn, data)
		if err == nil && ctx.Err() != nil {
			err = fleet.Errorf(fleet.CodeTimeout, "%s did not finish within %s", fn, a.cfg.CallTimeout)
		}
		a.reply(r, reply, fn, time.Since(start), res, err)
	}()
}

// repeat ignores a re-sent copy of a call this agent already ran or runs:
// the first copy's reply answers it (so it is no error).
func (a *Agent) repeat(r receipt, subject, id string) {
	a.log.Debug("repeat of a call ignored", "subject", subject, "call", id)
	r.settle(nil)
}

// refuse answers a call refused for caller's rate or share with err,
// while caller has refusal answers left
// (RefusalAnswerRate, RefusalAnswerBurst); past them the call is dropped
// unanswered, so a flood is not answered reply for call by every agent.
// It reports whether it answered.
func (a *Agent) refuse(r receipt, reply, fn, caller string, err error) bool {
	if !a.share.answer(caller) {
		r.settle(dropped{err, "the caller's refusal answers are used up"})
		return false
	}
	a.reply(r, reply, fn, 0, nil, err)
	return true
}

// RefusalsDropped is how many refused calls this agent dropped without a
// reply because their caller had used up its refusal answers.
func (a *Agent) RefusalsDropped() int64 { return a.share.dropped.Load() }

// reply sends a result, or an error as micro-style error headers, with
// the function's name and how long it took (fn "" when the subject named
// none), and settles r with what it answered.
func (a *Agent) reply(r receipt, subject, fn string, took time.Duration, res any, err error) {
	nc := a.Conn() // the newest: refreshFacts may have replaced the call's
	m := nats.NewMsg(subject)
	m.Header.Set(fleet.HeaderMachine, a.id)
	if r.callID != "" {
		m.Header.Set(fleet.HeaderCallID, r.callID)
	}
	if r.args != "" {
		m.Header.Set(fleet.HeaderArgs, r.args)
	}
	if fn != "" {
		m.Header.Set(fleet.HeaderFunction, fn)
		m.Header.Set(fleet.HeaderDuration, strconv.FormatFloat(took.Seconds(), 'f', -1, 64))
	}
	if err == nil {
		var b []byte
		var jerr error
		if e, ok := res.(functions.Encoded); ok && e.EncodedJSON() != nil {
			b = e.EncodedJSON() // encoded once per reading, not per call
		} else {
			b, jerr = json.Marshal(res)
		}
		switch {
		case jerr != nil:
			err = fleet.Errorf(fleet.CodeInternal, "cannot encode the result: %v", jerr)
		case int64(len(b)) > nc.MaxPayload()-replyHeadroom:
			err = fleet.Errorf(fleet.CodeTooLarge, "the result is %d bytes, more than the broker's %d-byte message limit; narrow the call with its arguments",
				len(b), nc.MaxPayload())
		default:
			m.Data = b
		}
	}
	if err != nil {
		code, desc := describe(err)
		m.Header.Set(fleet.HeaderErrorCode, code)
		m.Header.Set(fleet.HeaderError, desc)
	}
	// The call is counted before its answer leaves: whoever reads the
	// statistics after the answer (nats micro stats) sees it, with the
	// time it took to here.
	r.settle(err)
	if perr := nc.PublishMsg(m); perr != nil {
		a.log.Warn("reply not sent", "error", perr)
		cause := err
		if cause == nil {
			cause = perr
		}
		r.replyLost(err != nil, dropped{cause, "the reply could not be sent"})
	}
}

// replyHeadroom is what a reply's headers and protocol line may take of
// the broker's max payload.
const replyHeadroom = 1024

// headerSafe makes an error description fit one header line, at most 4 KiB.
func headerSafe(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) > 4096 {
		s = strings.ToValidUTF8(s[:4096], "") + "…"
	}
	return s
}

// Conn is the agent's NATS connection (nil before Start).
func (a *Agent) Conn() *nats.Conn {
	a.connMu.Lock()
	defer a.connMu.Unlock()
	return a.nc
}

// Close stops serving and closes the connection. It is safe to call while
// Start is still running (Start then closes what it connected and fails),
// and more than once.
func (a *Agent) Close() {
	a.connMu.Lock()
	a.closed = true
	nc, pending := a.nc, a.pending
	a.connMu.Unlock()
	if nc != nil {
		nc.Close()
	}
	if pending != nil {
		pending.Close()
	}
}
