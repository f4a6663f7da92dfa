package controlsvc

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// AuthCalloutSubject is where the broker sends authorization requests.
const AuthCalloutSubject = fleet.AuthCalloutSubject

// Usernames the callout gives connections, as they appear in the broker's
// connect/disconnect events and CONNZ.
const (
	agentUserPrefix    = "agent:"
	operatorUserPrefix = "operator:"
)

type operatorIdentity struct {
	Name, Key, Role string
	// Sessions is the operator's sessions permission (fleet.MaySeeSessions).
	Sessions bool
}

// callout answers the broker's auth callout: it verifies the connection's
// nkey signature over the server nonce, looks the identity up in the
// registry and issues a user JWT with exactly the permissions it needs.
type callout struct {
	keys *Keys
	// signer and box are the issuer and xkey with their costly parts
	// derived once (see fastkeys.go); init fills them.
	signer   nkeys.KeyPair
	box      *boxCache
	initOnce sync.Once
	initErr  error
	reg      *Registry
	log      *slog.Logger
	ttl      time.Duration
	// now is the clock a request's deadline and an issued JWT's expiry
	// are read from (nil means time.Now). The broker checks both against
	// its own clock, so outside unit tests it is the real time.
	now      func() time.Time
	readOnly []string
	onRefuse func(kind, who, ip, reason string)
	onGrant  func(kind, who string)
	// onAudit records a refusal with the key presented; site is the
	// remote site whose broker asked ("": the hub's own).
	onAudit func(kind, who, key, ip, site, reason string)
	// sessionQ, once subscribed, holds the session and WebSocket
	// requests for workers of their own (nil: answered in turn).
	sessionQ *lifo
	// limit bounds each machine's connections (nil: no bound).
	limit *connLimiter
	// siteTTL, when above 0 and below ttl, is the lifetime of credentials
	// for connections at a remote site's broker (see sitettl.go).
	siteTTL time.Duration
	// issued, when set, sees every user JWT before it is signed (tests).
	issued func(req *jwt.AuthorizationRequestClaims, uc *jwt.UserClaims)
	// sites are the remote sites whose leaf links the hub accepts: name
	// to the bcrypt hash of the site's secret (see leaflinks.go).
	sites map[string]string
	// onLink is told of every leaf link authorised, to keep one per site
	// and account.
	onLink func(l leafLink)
	// linkSize refuses a site's FLEET link too large for the broker
	// (nil: not checked; see linksize.go).
	linkSize *linkSize
	// siteSums are the SHA-256 verifiers of the sites' secrets (the
	// leaf sites' secret_sha256): a link is checked against them in
	// constant time, never with bcrypt (see leaflinks.go).
	siteSums map[string][sha256.Size]byte
	// secrets remembers the sites' secrets once checked, so a wrong one
	// costs no bcrypt (see leaflinks.go).
	secrets siteSecrets
	// siteRate and siteBurst bound each remote site's callout requests
	// (0: DefaultSiteCalloutRate, DefaultSiteCalloutBurst).
	siteRate  float64
	siteBurst int
	// sessions admits the sessions of apps (session_admit.go).
	sessions sessionAdmission
	// refusals bounds the "connection refused" lines at warn.
	refusals refusalLog
}

// clock returns now, or time.Now when it is nil.
func (c *callout) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// init derives the signing and sealing keys, once.
func (c *callout) init() error {
	c.initOnce.Do(func() {
		var err error
		if c.signer, err = newCachedSigner(c.keys.Issuer); err != nil {
			c.initErr = fmt.Errorf("issuer key: %w", err)
			return
		}
		if c.keys.XKey == nil {
			return // requests arrive unencrypted
		}
		if c.box, err = newBoxCache(c.keys.XKey); err != nil {
			c.initErr = fmt.Errorf("xkey: %w", err)
		}
	})
	return c.initErr
}

// subscribe starts answering callout requests on nc with a pool of workers;
// replicas share the load through a queue group.
//
// Requests wait in a LIFO stack, not a FIFO queue. When connections arrive
// faster than they can be authorised (every agent reconnecting after a
// broker restart), a FIFO serves each request only after all older ones,
// so under sustained overload every request waits past the client's and
// the broker's timeouts and the work is wasted: the reconnect storm never
// ends. Newest-first keeps serving requests whose clients are still
// waiting while the old ones expire unanswered (and are skipped without
// crypto); when nothing is queued up the order makes no difference.
//
// Remote sites' requests never wait in the hub's stack: whoever controls
// a site's broker may publish what it likes on its site's callout
// subject. Each site has a stack of its own, bounded and fed at most at
// its rate (siteRate requests per second, bursts of siteBurst; past it
// they are dropped unanswered, at the cost of a map lookup), served in
// turn by workers of their own: a site's flood delays only that site's
// admissions, never the hub's.
//
// Sessions, and every connection over the public WebSocket listener,
// are likewise answered by workers of their own (sessionWorkers) from a
// bounded stack of their own: the shared workers only decode such a
// request (the broker's encryption hides what it is until then) and pass
// it on, so a flood of them delays only sessions and WebSocket clients,
// never the agents and operators on the client port.
func (c *callout) subscribe(nc *nats.Conn) (*nats.Subscription, func(), error) {
	if err := c.init(); err != nil {
		return nil, nil, err
	}
	q := newLIFO(1 << 16)
	// Sessions' and WebSocket requests, routed here by handle once
	// decoded, before any request can arrive.
	ssq := newLIFO(sessionQueueLimit)
	c.sessionQ = ssq
	sub, err := nc.QueueSubscribe(AuthCalloutSubject, "cc-control", func(m *nats.Msg) { q.push(m, c.clock()) })
	if err != nil {
		return nil, nil, fmt.Errorf("subscribe to auth callout: %w", err)
	}
	_ = sub.SetPendingLimits(-1, -1) // the stack bounds what is held
	// Remote sites' brokers' requests arrive renamed under their site.
	sq := newSiteQueues(cmp.Or(c.siteRate, DefaultSiteCalloutRate), cmp.Or(c.siteBurst, DefaultSiteCalloutBurst), siteQueueLimit, c.clock, c.log)
	siteSub, err := nc.QueueSubscribe(fleet.SiteAuthWildcard, "cc-control", sq.push)
	if err != nil {
		_ = sub.Unsubscribe()
		return nil, nil, fmt.Errorf("subscribe to the sites' auth callout: %w", err)
	}
	_ = siteSub.SetPendingLimits(-1, -1) // the rate and the stacks bound what is held
	var wg sync.WaitGroup
	serve := func(pop func() (queued, bool)) {
		for {
			it, ok := pop()
			if !ok {
				return
			}
			c.handle(it.m, it.at)
		}
	}
	for range max(2, runtime.GOMAXPROCS(0)*2) {
		wg.Go(func() { serve(q.pop) })
	}
	for range max(1, runtime.GOMAXPROCS(0)/2) {
		wg.Go(func() { serve(sq.pop) })
	}
	for range sessionWorkers() {
		wg.Go(func() {
			for {
				it, ok := ssq.pop()
				if !ok {
					return
				}
				c.answerSession(it)
			}
		})
	}
	stop := func() {
		_ = sub.Unsubscribe()
		_ = siteSub.Unsubscribe()
		q.close()
		sq.close()
		ssq.close()
		wg.Wait()
	}
	return sub, stop, nil
}

// sessionWorkers is how many workers answer the sessions' stack (see
// handle).
func sessionWorkers() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// sessionQueueLimit bounds the session and WebSocket requests waiting
// for the sessions' workers (past it the oldest are dropped unanswered).
const sessionQueueLimit = 4096

// Remote sites' callout requests (see subscribe).
const (
	// DefaultSiteCalloutRate is the requests per second one site's
	// brokers may send the callout, sustained: a site of 2,000 machines
	// all reconnecting at once is admitted in 10 s.
	DefaultSiteCalloutRate = 200.0
	// DefaultSiteCalloutBurst is the requests a site may send at once.
	DefaultSiteCalloutBurst = 400
	// siteQueueLimit bounds the requests one site has waiting.
	siteQueueLimit = 512
	// calloutMaxWait is how long a site's request (or one without an
	// expiry) may wait for a worker, whatever its expiry says (a site
	// chooses that, and a request without one would never be stale):
	// brokers give up on a connection's authentication by then unless
	// configured otherwise (broker.DefaultAuthTimeout).
	calloutMaxWait = broker.DefaultAuthTimeout
)

// queued is a callout request and when it arrived; in the sessions'
// stack, also the request decoded and the broker's xkey.
type queued struct {
	m    *nats.Msg
	at   time.Time
	req  *jwt.AuthorizationRequestClaims
	xkey string
}

// lifo is a bounded stack of callout requests: pop takes the newest, and a
// push onto a full stack drops the oldest (whose client has waited
// longest and is the likeliest to have given up).
type lifo struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []queued
	limit  int
	closed bool
}

func newLIFO(limit int) *lifo {
	q := &lifo{limit: limit}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *lifo) push(m *nats.Msg, at time.Time) { q.pushItem(queued{m: m, at: at}) }

func (q *lifo) pushItem(it queued) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.items = pushBounded(q.items, it, q.limit)
	q.mu.Unlock()
	q.cond.Signal()
}

// pushBounded appends it to the stack items of at most limit, dropping
// the oldest quarter (at least one) at once when it is full.
func pushBounded(items []queued, it queued, limit int) []queued {
	if len(items) >= limit {
		n := copy(items, items[max(1, len(items)/4):])
		clear(items[n:])
		items = items[:n]
	}
	return append(items, it)
}

// popNewest takes the newest of a non-empty stack.
func popNewest(items []queued) (queued, []queued) {
	it := items[len(items)-1]
	items[len(items)-1] = queued{}
	return it, items[:len(items)-1]
}

func (q *lifo) pop() (queued, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.closed {
		q.cond.Wait()
	}
	if len(q.items) == 0 {
		return queued{}, false
	}
	var it queued
	it, q.items = popNewest(q.items)
	return it, true
}

func (q *lifo) close() {
	q.mu.Lock()
	q.closed = true
	q.items = nil
	q.mu.Unlock()
	q.cond.Broadcast()
}

// siteQueues holds remote sites' callout requests: a bounded stack per
// site, fed at most at the site's rate, popped one site after another.
type siteQueues struct {
	limit *opLimiter // one bucket per site
	max   int
	now   func() time.Time
	log   *slog.Logger

	mu     sync.Mutex
	cond   *sync.Cond
	stacks map[string][]queued
	turn   []string // sites with requests waiting, next to serve first
	closed bool
}

func newSiteQueues(rate float64, burst, limit int, now func() time.Time, log *slog.Logger) *siteQueues {
	q := &siteQueues{limit: newOpLimiter("site callout", "", rate, burst, now), max: limit, now: now, log: log, stacks: map[string][]queued{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// push queues m for its site, or drops it when the subject names no site
// or the site is over its rate.
func (q *siteQueues) push(m *nats.Msg) {
	site, err := fleet.ParseSiteAuthSubject(m.Subject)
	if err != nil {
		return // the broker's import names the site; nothing else arrives here
	}
	if r := q.limit.allow(site); r != nil {
		if r.Log {
			q.log.Warn("a site's callout requests are over its rate; the excess is dropped unanswered (its connections retry)",
				"site", site, "dropped", r.Count, "rate", q.limit.rate, "burst", q.limit.burst)
		}
		return
	}
	at := q.now()
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	st := q.stacks[site]
	if len(st) == 0 {
		q.turn = append(q.turn, site)
	}
	q.stacks[site] = pushBounded(st, queued{m: m, at: at}, q.max)
	q.mu.Unlock()
	q.cond.Signal()
}

// pop takes the newest request of the site whose turn it is.
func (q *siteQueues) pop() (queued, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.turn) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return queued{}, false
	}
	site := q.turn[0]
	q.turn = q.turn[1:]
	it, st := popNewest(q.stacks[site])
	if len(st) > 0 {
		q.stacks[site] = st
		q.turn = append(q.turn, site)
	} else {
		delete(q.stacks, site)
	}
	return it, true
}

func (q *siteQueues) close() {
	q.mu.Lock()
	q.closed = true
	q.stacks, q.turn = nil, nil
	q.mu.Unlock()
	q.cond.Broadcast()
}

// handle answers request m, which arrived at at.
func (c *callout) handle(m *nats.Msg, at time.Time) {
	var serverXKey string
	if m.Header != nil {
		serverXKey = m.Header.Get("Nats-Server-Xkey")
	}
	site := ""
	if m.Subject != AuthCalloutSubject {
		var err error
		if site, err = fleet.ParseSiteAuthSubject(m.Subject); err != nil {
			c.log.Error("auth callout request not answered", "error", err)
			return
		}
	}
	req, err := c.decodeQueued(m.Data, serverXKey, site, at)
	if err == nil && c.sessionQ != nil && limitedAddress(req, site) {
		// Sessions and WebSocket connections (the public listener) are
		// answered by workers of their own: a flood there costs the
		// shared workers only the decoding, and delays only sessions.
		c.sessionQ.pushItem(queued{m: m, at: at, req: req, xkey: serverXKey})
		return
	}
	var out []byte
	if err == nil {
		out, err = c.answer(req, serverXKey, site)
	}
	c.respond(m, out, err)
}

// answerSession answers a session or WebSocket request from the sessions'
// stack, unless it waited there past the broker's patience.
func (c *callout) answerSession(it queued) {
	if c.stale(it.req, "", it.at) {
		c.log.Debug("auth callout request skipped", "error", errStaleRequest)
		return
	}
	out, err := c.answer(it.req, it.xkey, "")
	c.respond(it.m, out, err)
}

// respond sends out as the answer to m, or logs why there is none.
func (c *callout) respond(m *nats.Msg, out []byte, err error) {
	if errors.Is(err, errStaleRequest) {
		c.log.Debug("auth callout request skipped", "error", err)
		return
	}
	if err != nil {
		c.log.Error("auth callout request not answered", "error", err)
		return
	}
	_ = m.Respond(out)
}

// authorizeQueued is authorizeAt for a request that arrived at received
// (zero: now): a site's request (or one without an expiry) that waited
// past calloutMaxWait is stale whatever its expiry says.
func (c *callout) authorizeQueued(data []byte, serverXKey, site string, received time.Time) ([]byte, error) {
	req, err := c.decodeQueued(data, serverXKey, site, received)
	if err != nil {
		return nil, err
	}
	return c.answer(req, serverXKey, site)
}

// decodeQueued decrypts and decodes a request that arrived at received,
// or says it is stale (see authorizeQueued).
func (c *callout) decodeQueued(data []byte, serverXKey, site string, received time.Time) (*jwt.AuthorizationRequestClaims, error) {
	if err := c.init(); err != nil {
		return nil, fmt.Errorf("callout keys unusable: %w", err)
	}
	if serverXKey != "" {
		if c.box == nil {
			return nil, errors.New("the request is encrypted but this service has no xkey")
		}
		var err error
		if data, err = c.box.open(data, serverXKey); err != nil {
			return nil, fmt.Errorf("cannot decrypt the request: %w", err)
		}
	}
	req, err := decodeRequest(data)
	if err != nil {
		return nil, fmt.Errorf("malformed request: %w", err)
	}
	if c.stale(req, site, received) {
		return nil, errStaleRequest
	}
	return req, nil
}

// stale tells whether the broker has given up on req, which arrived at
// received (zero: now) from the brokers of site.
func (c *callout) stale(req *jwt.AuthorizationRequestClaims, site string, received time.Time) bool {
	now := c.clock()
	waited := !received.IsZero() && now.Sub(received) > calloutMaxWait && (site != "" || req.Expires == 0)
	if (req.Expires != 0 && now.Unix() > req.Expires) || waited {
		// The broker has already given up on this connection (its auth
		// timeout passed while the request queued): answering would only
		// cost the CPU that live requests need. Under a reconnect storm
		// this keeps the callout working on requests that can still succeed.
		// A site's request, or one without an expiry, is stale once it
		// has waited longer than a broker waits, whatever it claims (the
		// hub's own brokers' expiry is believed: their auth timeout may
		// be set longer).
		return true
	}
	return false
}

// answer decides req and encodes (and, with serverXKey, encrypts) the
// broker's response.
func (c *callout) answer(req *jwt.AuthorizationRequestClaims, serverXKey, site string) ([]byte, error) {
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	uc, err := c.decideAt(req, site)
	if err == nil && c.issued != nil {
		c.issued(req, uc)
	}
	if err != nil {
		resp.Error = err.Error()
	} else if resp.Jwt, err = uc.Encode(c.signer); err != nil {
		resp.Error = "internal error issuing credentials"
		c.log.Error("encode user JWT", "error", err)
	}
	token, err := resp.Encode(c.signer)
	if err != nil {
		return nil, fmt.Errorf("encode the response: %w", err)
	}
	out := []byte(token)
	if serverXKey != "" {
		if out, err = c.box.seal(out, serverXKey); err != nil {
			return nil, fmt.Errorf("encrypt the response: %w", err)
		}
	}
	return out, nil
}

// decideAt is decide for a connection to the brokers of site ("": the
// hub's own). A site's broker admits only the machines registered to that
// site; operators and the other machines connect at the hub.
func (c *callout) decideAt(req *jwt.AuthorizationRequestClaims, site string) (*jwt.UserClaims, error) {
	opts, ci := req.ConnectOptions, req.ClientInformation
	if ci.Kind == leafKind {
		return c.decideLeaf(req, site)
	}
	if limitedAddress(req, site) {
		if err := c.limitAddress(req); err != nil {
			return nil, err
		}
	}
	if opts.Token != "" {
		return c.decideSession(req, site) // only sessions send a token
	}
	// Over the hub's WebSocket listener nothing unknown is recorded (a
	// remote site's requests are bounded by the site's rate instead).
	overWS := site == "" && ci.Type == wsClientType
	// An agent's name is its machine id, then its facts (fleet.EncodeFactsName):
	// the id alone is checked here (the deny list, the registry, the log
	// and the audit all name it); presence reads the facts.
	id := fleet.FactsNameID(opts.Name)
	if opts.Nkey == "" {
		return nil, c.refuseAt("unknown", id, opts.Nkey, ci.Host, site, "no nkey presented: agents connect with the machine's nkey (cc-agent --key FILE), operators with theirs (cc-bench --key FILE)")
	}
	if err := verifyNonce(opts.Nkey, ci.Nonce, opts.SignedNonce); err != nil {
		return nil, c.refuseAt("unknown", id, opts.Nkey, ci.Host, site, err.Error())
	}
	// The deny list after the signature: keys are public (the deny list,
	// pending and the audit show them), so a refusal naming a denied key
	// is written only for a client that proved it holds that key; anyone
	// else is refused above for its signature, and cannot be taken for
	// the denied host. The lookup itself is a memory read.
	if x, denied := c.reg.deniedStranger(id, opts.Nkey); denied {
		return nil, c.refuseSite("agent", id, id, opts.Nkey, ci.Host, site, deniedReason(x))
	}
	if site != "" {
		// A site is told about the name before anything of the key's
		// (see refuseSite), so that no reply tells an operator's key.
		if err := fleet.ValidateMachineID(id); err != nil {
			return nil, c.refuseAt("agent", id, opts.Nkey, ci.Host, site, "the connection name must be the machine id: "+err.Error())
		}
	}
	if op, ok := c.reg.OperatorByKey(opts.Nkey); ok {
		if site != "" {
			return nil, c.refuseSite("operator", op.Name, id, opts.Nkey, ci.Host, site, fmt.Sprintf(
				"operators connect to the hub, not to site %s's broker: a site's link carries only its own machines' calls", site))
		}
		id := operatorIdentity{Name: op.Name, Key: op.Key, Role: op.Role, Sessions: op.Sessions}
		uc := c.userClaims(req, operatorUserPrefix+op.Name, site)
		uc.Permissions = operatorPermissions(id, c.readOnly)
		c.granted("operator", op.Name)
		return uc, nil
	}
	if err := fleet.ValidateMachineID(id); err != nil {
		return nil, c.refuseAt("agent", id, opts.Nkey, ci.Host, site, "the connection name must be the machine id: "+err.Error())
	}
	// A site's broker is believed only about that site's machines: a
	// compromised site may present any id with a key of its own (signed
	// over a nonce it chose) and say any address. So the machine's site is
	// checked before its key, a site's attempts are recorded as pending
	// only for ids not in the registry and for its own machines, with the
	// site named, and a site is never told the key on record.
	// The site itself is answered one text for all of these (refuseSite):
	// the details, in the hub's log and audit, would tell a probing site
	// which ids the registry holds and where.
	m, ok := c.reg.Machine(id)
	if !ok && overWS {
		// The WebSocket listener is public: anyone may make up machine
		// ids there, and recording them would push real machines out of
		// the pending list. Unknown machines are met on the client port.
		return nil, c.refuseAt("agent", id, opts.Nkey, ci.Host, site, wsUnknownMachine(id))
	}
	if !ok {
		reason := fmt.Sprintf("machine %s is not in the registry; accept it with: cc-bench machines accept %s", id, id)
		if site != "" {
			reason = fmt.Sprintf("machine %s (at site %s's broker) is not in the registry; accept it with: cc-bench machines accept %s --site %s", id, site, id, site)
		}
		c.reg.RecordPendingAt(id, opts.Nkey, ci.Host, site, "not in the registry")
		return nil, c.refuseSite("agent", id, id, opts.Nkey, ci.Host, site, reason)
	}
	if m.Site != site {
		return nil, c.refuseSite("agent", id, id, opts.Nkey, ci.Host, site, siteMismatch(id, m.Site, site))
	}
	if m.Key != opts.Nkey {
		reason := fmt.Sprintf("machine %s presented key %s but the key on record is %s; if the machine was rebuilt, re-accept it with: cc-bench machines accept %s", id, opts.Nkey, m.Key, id)
		if site != "" {
			reason = fmt.Sprintf("machine %s (at site %s's broker) presented key %s, not the key on record; if the machine was rebuilt, re-accept it with: cc-bench machines accept %s --site %s", id, site, opts.Nkey, id, site)
		}
		if overWS {
			return nil, c.refuseAt("agent", id, opts.Nkey, ci.Host, site, fmt.Sprintf(
				"machine %s presented a key that is not the key on record, over WebSocket; a rebuilt machine connects on the client port (where its new key is recorded as pending), or an operator gives it its new key with: cc-bench machines add %s --pubkey KEY --replace", id, id))
		}
		c.reg.RecordPendingAt(id, opts.Nkey, ci.Host, site, "key does not match the key on record")
		return nil, c.refuseSite("agent", id, id, opts.Nkey, ci.Host, site, reason)
	}
	if err := c.limit.admit(id); err != nil {
		return nil, c.refuseAt("agent", id, opts.Nkey, ci.Host, site, err.Error())
	}
	uc := c.userClaims(req, agentUserPrefix+id, site)
	uc.Tags.Add(keyTagPrefix + opts.Nkey) // lets a re-key close this connection (see onRecord)
	uc.Permissions = agentPermissions(id)
	c.granted("agent", id)
	return uc, nil
}

// deniedReason is the refusal of a connection the deny list refuses.
func deniedReason(x fleet.Denied) string {
	what, undeny := "machine id "+x.ID, x.ID
	if x.Key != "" {
		what, undeny = "key "+x.Key, x.Key
	}
	return fmt.Sprintf("%s is on the deny list (since %s, by %s), so the connection is refused and not recorded as pending; "+
		"an operator can take it off with: cc-bench machines undeny %s", what, x.AddedAt.Format(time.RFC3339), orUnknownOp(x.AddedBy), undeny)
}

func orUnknownOp(s string) string {
	if s == "" {
		return "an unknown operator"
	}
	return s
}

// wsUnknownMachine is the refusal of an unregistered machine id over
// WebSocket: it is not recorded as pending.
func wsUnknownMachine(id string) string {
	return fmt.Sprintf("machine %s is not in the registry, and machines unknown to the registry are not recorded over WebSocket: connect it first on the client port (it is then pending: cc-bench machines accept %s), or register it with: cc-bench machines add %s --pubkey KEY", id, id, id)
}

func (c *callout) userClaims(req *jwt.AuthorizationRequestClaims, name, site string) *jwt.UserClaims {
	uc := jwt.NewUserClaims(req.UserNkey)
	uc.Audience = broker.FleetAccount
	uc.Name = name
	uc.Expires = c.clock().Add(c.userTTL(site)).Unix()
	return uc
}

func (c *callout) granted(kind, who string) {
	if c.onGrant != nil {
		c.onGrant(kind, who)
	}
}

// refuse logs, counts and audits a refused connection. who and key are
// what the client presented, unchecked: they are cut to
// fleet.AuditMaxClientText bytes before they are kept anywhere.
func (c *callout) refuse(kind, who, key, ip, reason string) error {
	return c.refuseAt(kind, who, key, ip, "", reason)
}

// refuseAt is refuse for a connection remote site's broker asked about
// ("": the hub's own): the log and the audit name the site, whose word
// the name, key and address are.
func (c *callout) refuseAt(kind, who, key, ip, site, reason string) error {
	who, key, ip = boundClientText(who), boundClientText(key), boundClientText(ip)
	level := c.refusals.level(c.log, c.clock())
	if site != "" {
		c.log.Log(context.Background(), level, "connection refused", "kind", kind, "name", who, "ip", ip, "reported_by_site", site, "reason", reason)
	} else {
		c.log.Log(context.Background(), level, "connection refused", "kind", kind, "name", who, "ip", ip, "reason", reason)
	}
	if c.onRefuse != nil {
		c.onRefuse(kind, who, ip, reason)
	}
	if c.onAudit != nil {
		c.onAudit(kind, who, key, ip, site, reason)
	}
	return errors.New(reason)
}

// refuseSite is refuseAt for a refusal on who's identity (its name and
// key, the registry's entry for it). The log and the audit keep reason;
// a remote site is answered siteRefusal(name, site) whatever the reason,
// so a site probing ids and keys learns only that they are not admitted
// there, not whether the id is registered, to the hub or to another site,
// or with another key. The hub's own brokers are answered reason: their
// clients connect to the hub itself.
func (c *callout) refuseSite(kind, who, name, key, ip, site, reason string) error {
	err := c.refuseAt(kind, who, key, ip, site, reason)
	if site == "" {
		return err
	}
	return errors.New(siteRefusal(name, site))
}

// siteRefusal is the one text a remote site is answered for a refused
// identity (see refuseSite).
func siteRefusal(name, site string) string {
	return fmt.Sprintf("machine %q is not admitted at site %s; an operator at the hub can see why in the audit (cc-bench audit --log refused)",
		boundClientText(name), site)
}

var errStaleRequest = errors.New("request expired before it was handled (broker auth timeout passed); skipped")

// decodeRequest parses the broker's authorization request JWT without
// checking its signature. That signature is the broker's own server key,
// which nothing pins: whoever could publish a forged request could sign it
// with a key of their own, so checking it proves nothing and costs an
// ed25519 verification per connection. What does authenticate the
// connection is checked in decide: the client's signature over the nonce,
// by the key on record. (Only the brokers can publish on the callout
// subject: the CONTROL account holds just the control service's users,
// whom the broker denies that subject.)
func decodeRequest(token []byte) (*jwt.AuthorizationRequestClaims, error) {
	parts := bytes.SplitN(token, []byte("."), 3)
	if len(parts) != 3 {
		return nil, errors.New("not a JWT")
	}
	payload := make([]byte, base64.RawURLEncoding.DecodedLen(len(parts[1])))
	n, err := base64.RawURLEncoding.Decode(payload, parts[1])
	if err != nil {
		return nil, fmt.Errorf("JWT payload: %w", err)
	}
	var req jwt.AuthorizationRequestClaims
	if err := json.Unmarshal(payload[:n], &req); err != nil {
		return nil, fmt.Errorf("JWT payload: %w", err)
	}
	if req.Type != jwt.AuthorizationRequestClaim {
		return nil, fmt.Errorf("JWT type %q, want %q", req.Type, jwt.AuthorizationRequestClaim)
	}
	if !nkeys.IsValidPublicUserKey(req.UserNkey) {
		return nil, fmt.Errorf("request user nkey %q is not a user public key", req.UserNkey)
	}
	return &req, nil
}

// verifyNonce checks that sig is key's signature over the server nonce. The
// broker does not check it for keys it does not know, so the callout must.
func verifyNonce(key, nonce, sig string) error {
	if nonce == "" || sig == "" {
		return errors.New("no signed nonce presented; the client must sign the server nonce with its nkey")
	}
	kp, err := nkeys.FromPublicKey(key)
	if err != nil || !nkeys.IsValidPublicUserKey(key) {
		return fmt.Errorf("presented key %q is not a user nkey", boundClientText(key))
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		if raw, err = base64.StdEncoding.DecodeString(sig); err != nil {
			return errors.New("signed nonce is not base64")
		}
	}
	if err := kp.Verify([]byte(nonce), raw); err != nil {
		return fmt.Errorf("signature over the nonce does not verify for key %s", key)
	}
	return nil
}

// Refused connections are logged one line each (the broker's own lines
// about them go to debug: broker/log.go), at warn up to refusalLogBurst
// per refusalLogWindow; past that at debug, and one warn line counts them
// when the window ends, so a flood of unknown keys cannot flood the log.
const (
	refusalLogWindow = 10 * time.Second
	refusalLogBurst  = 20
)

// refusalLog is the bound on "connection refused" lines at warn.
type refusalLog struct {
	mu         sync.Mutex
	windowEnds time.Time
	logged     int
	suppressed int
}

// level is the level of a refusal's line at now: warn within the burst,
// debug past it. It logs how many were at debug in the window that ended.
func (r *refusalLog) level(l *slog.Logger, now time.Time) slog.Level {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !now.Before(r.windowEnds) {
		if r.suppressed > 0 {
			l.Warn("more connections refused (logged at debug)", "count", r.suppressed, "window", refusalLogWindow)
		}
		r.windowEnds, r.logged, r.suppressed = now.Add(refusalLogWindow), 0, 0
	}
	if r.logged < refusalLogBurst {
		r.logged++
		return slog.LevelWarn
	}
	r.suppressed++
	return slog.LevelDebug
}
