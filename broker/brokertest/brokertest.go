// Package brokertest starts an embedded commandcontrol broker on a free
// loopback port for tests, with freshly generated auth keys, so a test can
// connect as the control service's own users (or run a control service of
// its own against it) without touching any data directory.
package brokertest

import (
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Keys are the key pairs generated for one test broker: the callout issuer
// (an account key), the callout xkey (a curve key) and the control
// service's three users. They carry their seeds, so a test can both
// connect as those users and sign callout responses.
type Keys struct {
	Issuer, XKey                         nkeys.KeyPair
	Sys, Control, Fleet, Calls, Announce nkeys.KeyPair
}

// Auth returns the public halves, as the broker is configured with them.
func (k *Keys) Auth() broker.AuthKeys {
	pub := func(kp nkeys.KeyPair) string {
		p, err := kp.PublicKey()
		if err != nil {
			panic("brokertest: " + err.Error())
		}
		return p
	}
	return broker.AuthKeys{
		CalloutIssuer: pub(k.Issuer),
		CalloutXKey:   pub(k.XKey),
		SysUser:       pub(k.Sys),
		ControlUser:   pub(k.Control),
		FleetUser:     pub(k.Fleet),
		CallsUser:     pub(k.Calls),
		AnnounceUser:  pub(k.Announce),
	}
}

// Option adjusts the broker's configuration before it starts.
type Option func(*broker.Config)

// WithAuthTimeout sets how long a connection may take to authenticate,
// which bounds how long the broker waits for an auth callout answer.
func WithAuthTimeout(d time.Duration) Option {
	return func(c *broker.Config) { c.AuthTimeout = d }
}

// WithConfig lets a test change any field of the configuration. Auth is
// filled in before the options run; Listen defaults to 127.0.0.1:0.
func WithConfig(f func(*broker.Config)) Option { return Option(f) }

// NewKeys generates a fresh set of auth keys.
func NewKeys(t testing.TB) *Keys {
	t.Helper()
	must := func(kp nkeys.KeyPair, err error) nkeys.KeyPair {
		t.Helper()
		if err != nil {
			t.Fatalf("brokertest: create key: %v", err)
		}
		return kp
	}
	return &Keys{
		Issuer:   must(nkeys.CreateAccount()),
		XKey:     must(nkeys.CreateCurveKeys()),
		Sys:      must(nkeys.CreateUser()),
		Control:  must(nkeys.CreateUser()),
		Fleet:    must(nkeys.CreateUser()),
		Calls:    must(nkeys.CreateUser()),
		Announce: must(nkeys.CreateUser()),
	}
}

// Start starts a broker on 127.0.0.1 with a free port and fresh keys, and
// shuts it down when the test ends.
func Start(t testing.TB, opts ...Option) (*broker.Broker, *Keys) {
	t.Helper()
	keys := NewKeys(t)
	cfg := broker.Config{Listen: "127.0.0.1:0", Auth: keys.Auth()}
	for _, o := range opts {
		o(&cfg)
	}
	return StartWith(t, cfg), keys
}

// StartWith starts a broker configured by cfg as it is (its auth keys,
// listen address and links are the caller's), and shuts it down when the
// test ends.
func StartWith(t testing.TB, cfg broker.Config) *broker.Broker {
	t.Helper()
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	if err := b.Start(); err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	t.Cleanup(b.Shutdown)
	return b
}

// Connect connects to b as the nkey user kp (for example keys.Sys), and
// closes the connection when the test ends.
func Connect(t testing.TB, b *broker.Broker, kp nkeys.KeyPair, opts ...nats.Option) *nats.Conn {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	all := append([]nats.Option{nats.Nkey(pub, kp.Sign), nats.Timeout(5 * time.Second), nats.NoReconnect()}, opts...)
	nc, err := nats.Connect(b.ClientURL(), all...)
	if err != nil {
		t.Fatalf("brokertest: connect as %s: %v", pub, err)
	}
	t.Cleanup(nc.Close)
	return nc
}
