package controlsvc

import (
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/internal/keyfile"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// newUser returns a fresh user key pair and its public key.
func newUser(t testing.TB) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return kp, pub
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Shorthands only tests use: the service itself always calls the
// site-aware, queued or graced forms.

// authorize turns one (possibly encrypted) authorization request into the
// signed (and then encrypted) response the broker expects.
func (c *callout) authorize(data []byte, serverXKey string) ([]byte, error) {
	return c.authorizeAt(data, serverXKey, "")
}

// authorizeAt is authorize for a request from the brokers of site ("":
// the hub's own).
func (c *callout) authorizeAt(data []byte, serverXKey, site string) ([]byte, error) {
	return c.authorizeQueued(data, serverXKey, site, time.Time{})
}

// decide returns the user claims for an authorised connection to the
// hub's brokers, or the reason it is refused.
func (c *callout) decide(req *jwt.AuthorizationRequestClaims) (*jwt.UserClaims, error) {
	return c.decideAt(req, "")
}

// expire ends the grace of machine id now (whichever grace is running).
func (p *presence) expire(id string) { p.expireGrace(id, 0) }

// LoadSeed reads an nkey seed file as the service does.
func LoadSeed(path string) (nkeys.KeyPair, error) { return keyfile.ReadSeed(seedWhat, path) }
