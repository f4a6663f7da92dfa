package fleet

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nkeys"
)

// Session tokens admit the sessions of a signed app. The app's backend
// knows its users; for each it signs a short-lived token with the app's
// signing key (created by `cc-bench apps add`, shown once), and the
// session presents it in its [SessionHello]. The format is a JWT:
//
//	base64url(header) "." base64url(claims) "." base64url(signature)
//
// with the header {"typ":"JWT","alg":"ed25519-nkey"} and an Ed25519
// signature by the app key over the first two parts, as NATS JWTs are
// signed. Any language with Ed25519 can make one.

// SessionTokenClaims are what a session token says.
type SessionTokenClaims struct {
	// App is the app the token admits to.
	App string `json:"app"`
	// Subject is the app's user (its own id for them).
	Subject  string `json:"sub"`
	IssuedAt int64  `json:"iat"`
	Expires  int64  `json:"exp"`
	// Key, when set, binds the token to one session key: only the
	// session that proves that nkey may use it. Backends should bind
	// (the session sends its public key with its request for a token):
	// an unbound token admits ANY key until it expires, so whoever reads
	// it (a log, a proxy, the page's script) may replay it to open many
	// sessions in its user's name, up to the app's max_sessions; the
	// control service does not cap sessions per user.
	Key string `json:"nkey,omitempty"`
	// Claims are the app's own attributes of the user, shown with the
	// session (at most MaxSessionClaims, each value at most 256 bytes).
	Claims map[string]string `json:"claims,omitempty"`
}

// Bounds of a session token.
const (
	// MaxSessionTokenTTL is the longest a token may live (exp - iat).
	MaxSessionTokenTTL = 24 * time.Hour
	// SessionTokenSkew is how far in the future iat may be (clocks differ).
	SessionTokenSkew = time.Minute
	// MaxSessionClaims bounds the claims of a token.
	MaxSessionClaims = 16
	// MaxSessionToken bounds an encoded token.
	MaxSessionToken = 4 << 10
)

const maxTTLSeconds = int64(MaxSessionTokenTTL / time.Second)

const sessionTokenHeader = `{"typ":"JWT","alg":"ed25519-nkey"}`

var b64 = base64.RawURLEncoding

// EncodeSessionToken signs c with sign (the app key's Sign).
func EncodeSessionToken(c SessionTokenClaims, sign func([]byte) ([]byte, error)) (string, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signed := b64.EncodeToString([]byte(sessionTokenHeader)) + "." + b64.EncodeToString(body)
	sig, err := sign([]byte(signed))
	if err != nil {
		return "", fmt.Errorf("sign the session token: %w", err)
	}
	return signed + "." + b64.EncodeToString(sig), nil
}

// SignSessionToken signs c with the app's seed (as `cc-bench apps add`
// printed it).
func SignSessionToken(c SessionTokenClaims, seed []byte) (string, error) {
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return "", fmt.Errorf("app signing key: %w", err)
	}
	defer kp.Wipe()
	return EncodeSessionToken(c, kp.Sign)
}

// ParseSessionToken verifies token with the app's public key appKey and
// checks its times against now; it does not check App or Key against
// the connection (the caller does).
func ParseSessionToken(token, appKey string, now time.Time) (SessionTokenClaims, error) {
	var c SessionTokenClaims
	if len(token) > MaxSessionToken {
		return c, fmt.Errorf("session token is %d bytes; at most %d are allowed", len(token), MaxSessionToken)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, errors.New("session token is not a JWT (want header.claims.signature)")
	}
	hdr, err := b64.DecodeString(parts[0])
	if err != nil || string(hdr) != sessionTokenHeader {
		return c, fmt.Errorf("session token header: want %s", sessionTokenHeader)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return c, errors.New("session token signature is not base64url")
	}
	kp, err := nkeys.FromPublicKey(appKey)
	if err != nil {
		return c, fmt.Errorf("app key on record: %w", err)
	}
	if err := kp.Verify([]byte(parts[0]+"."+parts[1]), sig); err != nil {
		return c, errors.New("session token is not signed by the app's key")
	}
	body, err := b64.DecodeString(parts[1])
	if err != nil {
		return c, errors.New("session token claims are not base64url")
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return c, fmt.Errorf("session token claims: %v", err)
	}
	return c, c.check(now)
}

func (c *SessionTokenClaims) check(now time.Time) error {
	switch {
	case c.Subject == "" || len(c.Subject) > MaxIDLen:
		return fmt.Errorf("session token subject (sub) must be 1–%d bytes", MaxIDLen)
	case c.IssuedAt <= 0 || c.Expires <= 0 || c.IssuedAt > 1<<40 || c.Expires > 1<<40:
		return errors.New("session token needs iat and exp: Unix times in seconds")
	case c.Expires <= c.IssuedAt:
		return errors.New("session token expires before it was issued")
	// In seconds, never as a Duration: exp - iat of centuries would
	// overflow one and pass.
	case c.Expires-c.IssuedAt > maxTTLSeconds:
		return fmt.Errorf("session token lives %d s; at most %s is allowed", c.Expires-c.IssuedAt, MaxSessionTokenTTL)
	case c.IssuedAt > now.Unix()+int64(SessionTokenSkew/time.Second):
		return errors.New("session token is issued in the future (check the app backend's clock)")
	case now.Unix() >= c.Expires:
		return errors.New("session token has expired; the app must fetch a fresh one")
	case c.Expires-now.Unix() > maxTTLSeconds+int64(SessionTokenSkew/time.Second):
		return fmt.Errorf("session token expires more than %s from now", MaxSessionTokenTTL)
	case len(c.Claims) > MaxSessionClaims:
		return fmt.Errorf("session token has %d claims; at most %d are allowed", len(c.Claims), MaxSessionClaims)
	}
	for k, v := range c.Claims {
		if k == "" || len(k) > 64 || len(v) > 256 {
			return fmt.Errorf("session token claim %q: keys 1–64 bytes, values at most 256", boundText(k))
		}
	}
	return nil
}
