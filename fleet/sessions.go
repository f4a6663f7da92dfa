package fleet

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strings"
	"time"
)

// Sessions are browsers, mobile apps and devices of an operator-registered
// [App]. They connect (over the broker's WebSocket listener, or plain
// NATS) through the same auth callout as machines, prove a key they
// generated themselves, and expose the app's functions on subjects of
// their own:
//
//	SessionFnRoot.<session id>.<function>.<caller key>
//
// answering on the same reply subjects as machines, with the session id
// as the target token (_INBOX_cc.<caller>.<session id>.<call>.<copy>).
// The broker lets a session subscribe only to its own calls of its app's
// functions and publish only those replies: it cannot call machines or
// sessions, read presence, or answer for anyone else.
const (
	// SessionFnRoot prefixes calls to sessions. It is not FnRoot: no
	// machine permission (a viewer's read-only functions, a broadcast)
	// ever reaches a session, and no session call reaches a machine.
	SessionFnRoot = Prefix + ".sfn"
	// OpSessionsSnapshot is the control operation (the <op> of
	// [CtlSubject]) answering a [SessionSnapshot] for a [SessionQuery]:
	// the ONLINE sessions, selected by the control service, in parts, to
	// the operator the subject names (only that operator may publish it)
	// and within that operator's own snapshot limit; an operator that may
	// not see sessions ([MaySeeSessions]) is answered 403.
	OpSessionsSnapshot = "sessions.snapshot"
	// SessionEventRoot prefixes session presence events:
	// SessionEventRoot.<joined|left>.<session id>. They are numbered
	// apart from the machines' (their own Seq and Epoch), so a machine
	// watcher never sees them and a session watcher detects its gaps.
	SessionEventRoot = Prefix + ".presence.session"
	// SessionEventsWildcard matches every session presence event.
	SessionEventsWildcard = SessionEventRoot + ".>"
	// SessionCallsWildcard matches every call to every session (the
	// control service's call watcher and "no responders").
	SessionCallsWildcard = SessionFnRoot + ".>"
)

// SessionFnSubject is the subject on which the operator whose public nkey
// is caller calls function fn on session id.
func SessionFnSubject(id, fn, caller string) string {
	return SessionFnRoot + "." + id + "." + fn + "." + caller
}

// SessionFnWildcard is what session id subscribes to for function fn:
// every caller's calls.
func SessionFnWildcard(id, fn string) string { return SessionFnRoot + "." + id + "." + fn + ".*" }

// CallerSessionCallsWildcard matches every session call the operator with
// key caller may send.
func CallerSessionCallsWildcard(caller string) string { return SessionFnRoot + ".*.*." + caller }

// SessionEventSubject is the subject a session presence event is
// published on.
func SessionEventSubject(event, id string) string { return SessionEventRoot + "." + event + "." + id }

// ParseSessionFnSubject splits a session call subject; the returned
// Call's Token is the session id.
func ParseSessionFnSubject(subject string) (Call, error) {
	rest, ok := strings.CutPrefix(subject, SessionFnRoot+".")
	if !ok {
		return Call{}, fmt.Errorf("subject %q is not a session call subject", subject)
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return Call{}, fmt.Errorf("malformed session call subject %q: want %s.<session id>.<function>.<caller key>", subject, SessionFnRoot)
	}
	if err := ValidateSessionID(parts[0]); err != nil {
		return Call{}, err
	}
	return Call{Token: parts[0], Function: parts[1], Caller: parts[2]}, nil
}

// Session ids.
const (
	// SessionIDPrefix starts every session id. '+' is not allowed in a
	// machine id nor produced by [MachineToken], so a session id is never
	// a machine's token: a session can answer only as itself.
	SessionIDPrefix = "s+"
	// sessionIDBytes is how much of the hash a session id keeps: 80 bits,
	// so finding a key whose id is a given session's costs 2^80 tries.
	sessionIDBytes = 10
)

var sessionIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// SessionID is the id the control service assigns to a session of app
// that proved key (its public nkey): "s+" and 16 characters of base32
// (lower case) of the first 10 bytes of SHA-256(app, 0x00, key). The
// client does not choose it (it would need a key whose hash is the id
// it wants) but can compute it, to know its own subjects; a session that
// reconnects with the same key keeps its id, so presence does not flap.
func SessionID(app, key string) string {
	h := sha256.Sum256([]byte(app + "\x00" + key))
	return SessionIDPrefix + sessionIDEncoding.EncodeToString(h[:sessionIDBytes])
}

// IsSessionID reports whether tok is shaped like a session id (or a
// session's reply-subject target token, the same thing).
//
// It builds no error: the call watcher asks it of every reply's target
// token, nearly all of them machines'.
func IsSessionID(tok string) bool {
	rest, ok := strings.CutPrefix(tok, SessionIDPrefix)
	if !ok || len(rest) != 16 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// ValidateSessionID checks the shape of a session id.
func ValidateSessionID(id string) error {
	if !IsSessionID(id) {
		return fmt.Errorf("session id %q: want %s and 16 characters of a-z 2-7", boundText(id), SessionIDPrefix)
	}
	return nil
}

// boundText cuts client text quoted in an error.
func boundText(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// Admission kinds of an app's sessions.
const (
	// AdmissionPublic: anyone loading the app's page joins as an
	// anonymous session; rate-limited per source address, capped per app.
	AdmissionPublic = "public"
	// AdmissionSigned: the app's backend signs a short-lived
	// [SessionTokenClaims] token for each of its users with the app key.
	AdmissionSigned = "signed"
)

// Session platforms a session may declare.
const (
	PlatformBrowser = "browser"
	PlatformMobile  = "mobile"
	PlatformDevice  = "device"
)

// App is an operator-registered application whose sessions may join.
type App struct {
	Name string `json:"name"`
	// Functions are the only functions its sessions may expose.
	Functions []string `json:"functions"`
	// Admission is AdmissionPublic or AdmissionSigned.
	Admission string `json:"admission"`
	// MaxSessions caps its ONLINE sessions (0: the service's default).
	MaxSessions int `json:"max_sessions,omitempty"`
	// Origins are the web origins its pages are served from, as the
	// operator registered them (https://app.example.com).
	Origins []string `json:"origins,omitempty"`
	// Key is the public half of the app's signing key (signed apps):
	// the key its backend signs session tokens with.
	Key     string    `json:"key,omitempty"`
	AddedAt time.Time `json:"added_at"`
	AddedBy string    `json:"added_by,omitempty"`
	// Online is how many of its sessions are ONLINE now (apps.list).
	Online int `json:"online,omitempty"`
}

// AppRequest is the body of OpAppsAdd (all fields) and OpAppsRemove
// (Name only).
type AppRequest struct {
	Name        string   `json:"name"`
	Functions   []string `json:"functions,omitempty"`
	Public      bool     `json:"public,omitempty"`
	MaxSessions int      `json:"max_sessions,omitempty"`
	Origins     []string `json:"origins,omitempty"`
}

// AppCreated answers OpAppsAdd. Seed is the app's signing key (signed
// apps), shown this once: the control service keeps only its public half.
type AppCreated struct {
	App  App    `json:"app"`
	Seed string `json:"seed,omitempty"`
}

// AppRemoved answers OpAppsRemove: Closed sessions were disconnected.
type AppRemoved struct {
	Name   string `json:"name"`
	Closed int    `json:"closed"`
}

// Control API operations on apps (admin only).
const (
	OpAppsList   = "apps.list"
	OpAppsAdd    = "apps.add"
	OpAppsRemove = "apps.rm"
)

// SessionHello is what a session sends as its CONNECT auth_token (the
// "token" option of a NATS client), JSON-encoded, with its own nkey and
// the signature over the server's nonce. Everything in it is the
// session's word: App and Token are checked; Platform, UserAgent and
// AppVersion are shown as declared.
type SessionHello struct {
	App string `json:"app"`
	// Token is a session token signed by the app's key (signed apps).
	Token      string `json:"token,omitempty"`
	Platform   string `json:"platform,omitempty"`
	UserAgent  string `json:"user_agent,omitempty"`
	AppVersion string `json:"app_version,omitempty"`
}

// MaxSessionHello bounds the auth_token a session may send.
const MaxSessionHello = 8 << 10

// Location is where an address is, from the operator's own CIDR map
// (--sites) or a MaxMind-format City database (--geoip).
type Location struct {
	// Site is the operator's name for the network (CIDR map only).
	Site        string  `json:"site,omitempty"`
	City        string  `json:"city,omitempty"`
	Region      string  `json:"region,omitempty"`
	Country     string  `json:"country,omitempty"`
	CountryCode string  `json:"country_code,omitempty"`
	Latitude    float64 `json:"latitude,omitempty"`
	Longitude   float64 `json:"longitude,omitempty"`
	// Source says where it came from: "sites" or "geoip".
	Source string `json:"source"`
}

// Location sources.
const (
	LocationFromSites = "sites"
	LocationFromGeoIP = "geoip"
)

// Session is a session as the control service knows it. Everything but
// Declared is set by the control service from the connection and the
// registry; the session cannot forge it.
type Session struct {
	ID        string `json:"id"`
	App       string `json:"app"`
	Admission string `json:"admission"`
	// User is the signed token's subject (signed apps).
	User string `json:"user,omitempty"`
	// Claims are the signed token's claims (signed apps).
	Claims   map[string]string `json:"claims,omitempty"`
	IP       string            `json:"ip"`
	Location *Location         `json:"location,omitempty"`
	Since    time.Time         `json:"since"`
	// Functions are the app's functions the session may expose.
	Functions []string `json:"functions"`
	// Declared is what the session says of itself, unchecked.
	Declared SessionDeclared `json:"declared"`
}

// SessionDeclared is what a session says of itself (from its
// [SessionHello]): shown as declared, never trusted.
type SessionDeclared struct {
	Platform   string `json:"platform,omitempty"`
	UserAgent  string `json:"user_agent,omitempty"`
	AppVersion string `json:"app_version,omitempty"`
}

// SessionQuery selects sessions in an [OpSessionsSnapshot] request.
// Where keys are session attributes: app, admission, user, ip, platform,
// and the location's site, city, region, country, country_code; values
// match case-insensitively and exactly. An empty query selects all.
type SessionQuery struct {
	Where map[string]string `json:"where,omitempty"`
	// Limit caps the sessions returned (0: all).
	Limit int `json:"limit,omitempty"`
}

// SessionWhereKeys are the keys a [SessionQuery] may select on.
var SessionWhereKeys = []string{"app", "admission", "user", "ip", "platform", "site", "city", "region", "country", "country_code"}

// SessionAttr returns session s's attribute key (one of
// [SessionWhereKeys]) and whether it is one.
func SessionAttr(s *Session, key string) (string, bool) {
	loc := s.Location
	if loc == nil {
		loc = &Location{}
	}
	switch key {
	case "app":
		return s.App, true
	case "admission":
		return s.Admission, true
	case "user":
		return s.User, true
	case "ip":
		return s.IP, true
	case "platform":
		return s.Declared.Platform, true
	case "site":
		return loc.Site, true
	case "city":
		return loc.City, true
	case "region":
		return loc.Region, true
	case "country":
		return loc.Country, true
	case "country_code":
		return loc.CountryCode, true
	}
	return "", false
}

// MatchSession reports whether s has every attribute of where
// (case-insensitive equality). An unknown key is an error.
func MatchSession(s *Session, where map[string]string) (bool, error) {
	for k, want := range where {
		got, ok := SessionAttr(s, k)
		if !ok {
			return false, fmt.Errorf("unknown session attribute %q: use one of %s", boundText(k), strings.Join(SessionWhereKeys, ", "))
		}
		if !strings.EqualFold(got, want) {
			return false, nil
		}
	}
	return true, nil
}

// SessionSnapshot answers a [SessionQuery]: the matching ONLINE sessions,
// as of session event Seq of Epoch. Large answers come in parts like a
// [PresenceSnapshot].
type SessionSnapshot struct {
	Seq      uint64    `json:"seq"`
	Epoch    string    `json:"epoch,omitempty"`
	Sessions []Session `json:"sessions"`
	// Total is how many matched (more than len(Sessions) when cut by
	// the query's Limit).
	Total int       `json:"total"`
	Time  time.Time `json:"time"`
	Part  int       `json:"part,omitempty"`
	Parts int       `json:"parts,omitempty"`
}

// SessionEvent is published on [SessionEventSubject] when a session
// joins or leaves.
type SessionEvent struct {
	Event   string    `json:"event"`
	Session Session   `json:"session"`
	Time    time.Time `json:"time"`
	Seq     uint64    `json:"seq"`
	Epoch   string    `json:"epoch,omitempty"`
	Reason  string    `json:"reason,omitempty"`
}
