package controlsvc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/termsafe"
	"github.com/nats-io/jwt/v2"
)

// Session admission. A connection whose CONNECT carries an auth_token is
// a session of an app (fleet.SessionHello): agents and operators never
// send one. It proves a key of its own (the nonce signature, as every
// client); the app must be registered; a signed app's session presents a
// token its backend signed with the app key; a public app's sessions are
// anonymous. Every session attempt, and every connection over the public
// WebSocket listener, is rate-limited per source address (an IPv6
// address's /64) before any signature is checked, and each app's ONLINE
// sessions are capped, a public app's also per source address. The
// session gets credentials for exactly its app's functions under its own
// id, and the replies to them.

// sessionUserPrefix starts the user name of a session's connection:
// "session:<id>" (the presence events show it).
const sessionUserPrefix = "session:"

// sessionAppTagPrefix tags a session's credentials with its app.
const sessionAppTagPrefix = "app:"

// Session admission defaults.
const (
	// DefaultSessionRatePerIP is Config.SessionRatePerIP's default:
	// session (or WebSocket) connection attempts per second one source
	// address may make, sustained.
	DefaultSessionRatePerIP = 5.0
	// DefaultSessionBurstPerIP is Config.SessionBurstPerIP's default.
	DefaultSessionBurstPerIP = 20
	// DefaultMaxSessionsPerApp is Config.MaxSessionsPerApp's default: the
	// ONLINE sessions of an app registered without max_sessions.
	DefaultMaxSessionsPerApp = 10000
	// DefaultMaxSessionsPerIP is Config.MaxSessionsPerIP's default: the
	// ONLINE sessions of one public app one source address (an IPv6
	// address's /64) may hold.
	DefaultMaxSessionsPerIP = 100
	// maxSessionIPs bounds the source addresses whose attempts are
	// remembered; past it the ones as good as new are forgotten, and
	// the others never (newcomers then share one bucket: ipLimiter).
	maxSessionIPs = 1 << 16
)

// Bounds of what a session declares of itself (fleet.SessionDeclared).
const (
	maxDeclaredPlatform   = 32
	maxDeclaredUserAgent  = 256
	maxDeclaredAppVersion = 64
)

// sessionGate is what admission needs of session presence: it is told of
// each admitted session (with all its attributes, before the broker
// confirms the connection), counts an app's ONLINE sessions (the cap) and
// closes them all when the app is removed.
type sessionGate interface {
	admitted(s fleet.Session)
	onlineOf(app string) int
	// onlineFrom counts app's sessions from address ip (keyed as
	// limiterKey keys it) the same way: ONLINE or admitted and not yet
	// connected (the per-address cap of public apps).
	onlineFrom(app, ip string) int
	// connectedOf counts only the ONLINE ones (apps.list); onlineOf
	// also counts those admitted but not yet connected (the cap).
	connectedOf(app string) int
	closeApp(ctx context.Context, app string) int
}

// noSessions is the gate when the service has no session presence: it
// counts nothing (no cap applies) and closes nothing.
type noSessions struct{}

func (noSessions) admitted(fleet.Session)               { /* nothing tracks sessions */ }
func (noSessions) onlineOf(string) int                  { return 0 }
func (noSessions) onlineFrom(string, string) int        { return 0 }
func (noSessions) connectedOf(string) int               { return 0 }
func (noSessions) closeApp(context.Context, string) int { return 0 }

// sessionAdmission holds the callout's session settings.
type sessionAdmission struct {
	gate sessionGate
	// perIP bounds each source address's session and WebSocket attempts
	// (nil: none).
	perIP *ipLimiter
	// maxPerApp caps the ONLINE sessions of an app without max_sessions.
	maxPerApp int
	// maxPerIP caps a public app's ONLINE sessions from one source
	// address (0: no cap).
	maxPerIP int
	// locate says where an address is (nil: nowhere).
	locate func(ip string) *fleet.Location
	// now is the clock session tokens are checked against (nil: the
	// callout's).
	now func() time.Time
	// maxPayload bounds a session's messages (0: the broker's bound).
	maxPayload int
}

// sessionGate returns the gate (a no-op one when none is set).
func (c *callout) sessionGate() sessionGate {
	if c.sessions.gate == nil {
		return noSessions{}
	}
	return c.sessions.gate
}

// decideSession admits (or refuses) the session whose CONNECT carried an
// auth_token, for a connection to the brokers of site.
func (c *callout) decideSession(req *jwt.AuthorizationRequestClaims, site string) (*jwt.UserClaims, error) {
	opts, ci := req.ConnectOptions, req.ClientInformation
	refuse := func(who, reason string) error {
		return c.refuseAt("session", who, opts.Nkey, ci.Host, site, reason)
	}
	if site != "" {
		return nil, refuse("", fmt.Sprintf("sessions connect to the hub, not to site %s's broker", site))
	}
	// The per-address limit was applied by decideAt, before anything else.
	hello, err := parseSessionHello(opts.Token)
	if err != nil {
		return nil, refuse("", err.Error())
	}
	who := hello.App
	if opts.Nkey == "" {
		return nil, refuse(who, "no nkey presented: a session connects with a key of its own (a fresh user nkey) and signs the server nonce with it")
	}
	if err := verifyNonce(opts.Nkey, ci.Nonce, opts.SignedNonce); err != nil {
		return nil, refuse(who, err.Error())
	}
	app, ok := c.reg.App(hello.App)
	if !ok {
		return nil, refuse(who, fmt.Sprintf("app %s is not registered; an operator registers it with: cc-bench apps add %s --fn FUNCTION", hello.App, hello.App))
	}
	s := fleet.Session{App: app.Name, Admission: app.Admission, IP: ci.Host, Functions: app.Functions, Declared: declared(hello)}
	switch app.Admission {
	case fleet.AdmissionSigned:
		if hello.Token == "" {
			return nil, refuse(who, fmt.Sprintf("app %s admits only sessions with a token signed by its key; the app's backend signs one for each user (cc-bench apps token)", app.Name))
		}
		tokenNow := c.clock
		if c.sessions.now != nil {
			tokenNow = c.sessions.now
		}
		claims, err := fleet.ParseSessionToken(hello.Token, app.Key, tokenNow())
		if err != nil {
			return nil, refuse(who, fmt.Sprintf("app %s: %v", app.Name, err))
		}
		if claims.App != app.Name {
			return nil, refuse(who, fmt.Sprintf("the session token is for app %q, not %s", boundClientText(claims.App), app.Name))
		}
		if claims.Key != "" && claims.Key != opts.Nkey {
			return nil, refuse(who, fmt.Sprintf("app %s: the session token is bound to key %s, not to the key %s presented", app.Name, boundClientText(claims.Key), opts.Nkey))
		}
		s.User, s.Claims = signedUser(claims)
	case fleet.AdmissionPublic:
		if hello.Token != "" {
			return nil, refuse(who, fmt.Sprintf("app %s is public: its sessions present no token (leave it out)", app.Name))
		}
	default:
		return nil, refuse(who, fmt.Sprintf("app %s has admission %q, which this service does not know", app.Name, app.Admission))
	}
	limit := app.MaxSessions
	if limit == 0 {
		limit = c.sessions.maxPerApp
	}
	if limit == 0 {
		limit = DefaultMaxSessionsPerApp
	}
	gate := c.sessionGate()
	if n := gate.onlineOf(app.Name); n >= limit {
		return nil, refuse(who, fmt.Sprintf("app %s has %d sessions ONLINE, its cap (max_sessions %d); try again later", app.Name, n, limit))
	}
	// A public app's sessions are anonymous: the rate limit alone lets
	// one address fill the app's cap within a credential's lifetime, so
	// each address may hold only so many. A signed app's backend vouches
	// for each of its sessions: not capped by address.
	if app.Admission == fleet.AdmissionPublic && c.sessions.maxPerIP > 0 {
		if n := gate.onlineFrom(app.Name, ci.Host); n >= c.sessions.maxPerIP {
			return nil, refuse(who, fmt.Sprintf("app %s has %d sessions ONLINE from %s, the most one address may hold (cc-control --max-sessions-per-address %d); close some, or try again later",
				app.Name, n, limiterKey(ci.Host), c.sessions.maxPerIP))
		}
	}
	s.ID = fleet.SessionID(app.Name, opts.Nkey)
	s.Since = c.clock().UTC()
	if c.sessions.locate != nil {
		s.Location = c.sessions.locate(ci.Host)
	}
	uc := c.userClaims(req, sessionUserPrefix+s.ID, site)
	uc.Tags.Add(sessionAppTagPrefix + app.Name)
	uc.Permissions = sessionPermissions(s.ID, app.Functions)
	setSessionLimits(&uc.Limits, len(app.Functions), c.sessions.maxPayload)
	gate.admitted(s)
	c.granted("session", s.ID)
	return uc, nil
}

// wsClientType is the ClientInformation.Type nats-server gives a client
// connected over WebSocket (server/client.go clientTypeStringMap).
const wsClientType = "websocket"

// limitedAddress tells whether a connection's attempts count against its
// source address's bucket: every session (it sends a hello) and everything
// over WebSocket (the public listener: whoever loads a page may try
// anything there, agents' and operators' ways in included). A remote
// site's requests are bounded by the site's own rate instead (their
// addresses are the site's word).
func limitedAddress(req *jwt.AuthorizationRequestClaims, site string) bool {
	return site == "" && (req.ConnectOptions.Token != "" || req.ClientInformation.Type == wsClientType)
}

// limitAddress takes a token from the connection's source address's
// bucket, or refuses it. It runs before any signature is checked, so that a
// refused attempt costs only the request's decoding and a map lookup; a
// flood is logged and audited once per limitLogEvery per address (with
// the count), not once per attempt.
func (c *callout) limitAddress(req *jwt.AuthorizationRequestClaims) error {
	ci := req.ClientInformation
	r := c.sessions.perIP.allow(ci.Host)
	if r == nil {
		return nil
	}
	kind := "session"
	if req.ConnectOptions.Token == "" {
		kind = "websocket"
	}
	if !r.log {
		if c.onRefuse != nil {
			c.onRefuse(kind, "", boundClientText(ci.Host), "rate")
		}
		return r
	}
	return c.refuseAt(kind, "", req.ConnectOptions.Nkey, ci.Host, "", fmt.Sprintf("%v (%d attempt(s) refused since the last report)", r, r.count))
}

// sessionPermissions: receive only its own calls of its app's functions,
// publish only the replies that name it as the target. No response
// permission (the caller picks the reply subject), no presence, no calls.
func sessionPermissions(id string, fns []string) jwt.Permissions {
	var p jwt.Permissions
	for _, fn := range fns {
		p.Sub.Allow.Add(fleet.SessionFnWildcard(id, fn))
	}
	p.Pub.Allow.Add(fleet.MachineReplies(id))
	return p
}

// setSessionLimits bounds a session's credentials: its messages to
// maxPayload bytes (0: the broker's bound) and its subscriptions to one
// per function of its app and a little slack. Not every broker applies a
// callout user's limits (nats-server 2.15 does not): the call watcher
// closes a session answering with more than maxPayload (sessionflood.go)
// whatever the broker does.
func setSessionLimits(l *jwt.Limits, functions, maxPayload int) {
	l.Subs = int64(functions + sessionSubsSlack)
	if maxPayload > 0 {
		l.Payload = int64(maxPayload)
	}
}

// parseSessionHello decodes a session's auth_token.
func parseSessionHello(token string) (fleet.SessionHello, error) {
	var h fleet.SessionHello
	if len(token) > fleet.MaxSessionHello {
		return h, fmt.Errorf("session hello (the connection's auth token) is %d bytes; at most %d are allowed", len(token), fleet.MaxSessionHello)
	}
	if !strings.HasPrefix(strings.TrimSpace(token), "{") {
		return h, fmt.Errorf("the connection's auth token is not a session hello: want a JSON object {\"app\": NAME, ...}; agents and operators send no token")
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(token)))
	if err := dec.Decode(&h); err != nil {
		return h, fmt.Errorf("session hello is not valid JSON of a fleet.SessionHello: %s", boundClientText(err.Error()))
	}
	if dec.More() {
		return h, fmt.Errorf("session hello has text after its JSON object")
	}
	if err := fleet.ValidateName("session hello app", h.App); err != nil {
		return h, fmt.Errorf("%s", boundClientText(err.Error()))
	}
	return h, nil
}

// signedUser is the user and claims of a session token, without control
// or format characters (they could move a terminal's cursor or reorder
// the text where an operator reads them): the app's backend signed them,
// but they may come from its users. The token bounds their lengths.
func signedUser(c fleet.SessionTokenClaims) (string, map[string]string) {
	user := cleanDeclared(c.Subject, len(c.Subject))
	if user == "" {
		user = termsafe.String(c.Subject) // only such characters: shown escaped
	}
	if len(c.Claims) == 0 {
		return user, c.Claims
	}
	claims := make(map[string]string, len(c.Claims))
	for k, v := range c.Claims {
		if k = cleanDeclared(k, len(k)); k != "" {
			claims[k] = cleanDeclared(v, len(v))
		}
	}
	return user, claims
}

// declared is what hello says of the session, cut to sane lengths and
// without control or format characters: shown as declared, never trusted.
func declared(h fleet.SessionHello) fleet.SessionDeclared {
	return fleet.SessionDeclared{
		Platform:   cleanDeclared(h.Platform, maxDeclaredPlatform),
		UserAgent:  cleanDeclared(h.UserAgent, maxDeclaredUserAgent),
		AppVersion: cleanDeclared(h.AppVersion, maxDeclaredAppVersion),
	}
}

// cleanDeclared keeps the printable characters of s (no control, format
// or invalid bytes: they could move a terminal's cursor or reorder text)
// up to max bytes, cut at a character boundary.
func cleanDeclared(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) && r != ' ' {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > max {
			break
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// ipLimiter is a token bucket per source address with a bounded map.
//
// An address is keyed by what one party controls: an IPv4 address (an
// IPv4-mapped IPv6 address counts as its IPv4), an IPv6 address's /64
// (a host is handed a whole /64 and may rotate within it freely).
// When the map is full, only buckets as good as new are forgotten (full,
// and no refusal within limitLogEvery), at most once per sweepEvery; a
// bucket in debt or recently refused is never dropped, so a churn of
// fresh addresses cannot reset anyone's bucket. While the map stays full,
// every address it does not know shares one overflow bucket: memory stays
// bounded, and a flood from fresh addresses throttles only newcomers.
type ipLimiter struct {
	rate, burst float64
	max         int
	now         func() time.Time

	mu        sync.Mutex
	buckets   map[string]*ipBucket
	overflow  ipBucket
	lastSweep time.Time
}

// sweepEvery bounds how often a full limiter looks for buckets to forget
// (each look walks the whole map).
const sweepEvery = time.Second

// overflowKey names the shared bucket in refusals.
const overflowKey = "new addresses (too many addresses in the limiter)"

type ipBucket struct {
	tokens float64
	last   time.Time
	// refused counts refusals since the last report about this address.
	refused int
	logged  time.Time
	// lastRefused is when the address was last refused.
	lastRefused time.Time
}

// newIPLimiter returns a limiter, or nil (no limit) when rate is negative.
func newIPLimiter(rate float64, burst, maxIPs int, now func() time.Time) *ipLimiter {
	if rate < 0 {
		return nil
	}
	l := &ipLimiter{rate: rate, burst: float64(max(burst, 1)), max: max(maxIPs, 1), now: now, buckets: map[string]*ipBucket{}}
	l.overflow.tokens = l.burst
	return l
}

// limiterKey is the key of address ip's bucket: the IPv4 address, or the
// IPv6 address's /64. What does not parse as an address (the broker
// always gives one) is its own key, cut to a bounded length.
func limiterKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return boundClientText(ip)
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// ipRefusal is a refused attempt: log says to report it (the first
// refusal, then at most every limitLogEvery), count is the refusals since
// the last report.
type ipRefusal struct {
	ip          string
	rate, burst float64
	wait        time.Duration
	log         bool
	count       int
}

func (r *ipRefusal) Error() string {
	return fmt.Sprintf("too many session or WebSocket connections from %s (%g per second, bursts of %g; cc-control --session-rate and --session-burst set it): retry in %v",
		boundClientText(r.ip), r.rate, r.burst, r.wait)
}

// allow takes a token from ip's bucket, or says why not.
func (l *ipLimiter) allow(ip string) *ipRefusal {
	if l == nil {
		return nil
	}
	now := l.now()
	key := limiterKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.max && now.Sub(l.lastSweep) >= sweepEvery {
			l.sweepLocked(now)
		}
		if len(l.buckets) >= l.max {
			b, key = &l.overflow, overflowKey
		} else {
			b = &ipBucket{tokens: l.burst, last: now}
			l.buckets[key] = b
		}
	}
	l.refillLocked(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return nil
	}
	wait := time.Second
	if l.rate > 0 {
		wait = time.Duration((1 - b.tokens) / l.rate * float64(time.Second)).Round(time.Millisecond)
	}
	r := &ipRefusal{ip: key, rate: l.rate, burst: l.burst, wait: max(wait, time.Millisecond)}
	b.refused++
	b.lastRefused = now
	if b.logged.IsZero() || now.Sub(b.logged) >= limitLogEvery {
		r.log, r.count = true, b.refused
		b.logged, b.refused = now, 0
	}
	return r
}

func (l *ipLimiter) refillLocked(b *ipBucket, now time.Time) {
	if b.last.IsZero() {
		b.last = now
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = math.Min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.last = now
	}
}

// sweepLocked forgets the buckets as good as new: full, and not refused
// within limitLogEvery. The others are kept, however many.
func (l *ipLimiter) sweepLocked(now time.Time) {
	l.lastSweep = now
	for key, b := range l.buckets {
		l.refillLocked(b, now)
		if b.tokens >= l.burst && now.Sub(b.lastRefused) >= limitLogEvery {
			delete(l.buckets, key)
		}
	}
}

// size is how many addresses the limiter remembers (tests).
func (l *ipLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
