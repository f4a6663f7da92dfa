// Package stacktest starts the real commandcontrol stack in-process for
// tests: a control service with its embedded broker and auth callout (or a
// stand-alone broker beside it), real agents connecting with real nkeys, and
// operator identities registered in the real registry. Nothing is mocked;
// the helpers only choose identities and wait for the state a test needs.
//
// Keys derived with [Key] are deterministic, so golden files can show them.
// Set STACKTEST_LOG=1 (or E2E_LOG=1) to see the control service's, the
// brokers' and the agents' logs.
package stacktest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/keyfile"
)

// WaitTimeout bounds every wait of this package (a machine coming ONLINE,
// going OFFLINE, a connection's round trip).
const WaitTimeout = 10 * time.Second

// PingInterval is the embedded broker's ping interval. A client that
// answers no ping for three intervals (MaxPingsOut) is dropped as stale, so it is long
// enough that a test machine loaded by the race detector does not lose
// connections; tests close connections instead of waiting for pings.
const PingInterval = 5 * time.Second

// ExternalPingInterval is [StartBroker]'s ping interval. It also bounds how
// long the broker waits for the callout (four fifths of it), so a test of
// the control service being down does not wait long for the refusal.
const ExternalPingInterval = 2 * time.Second

// MaxPingsOut is the stacks' brokers' unanswered pings before a client is
// dropped: two, more patient than the default (broker.DefaultMaxPingsOut)
// with a client slowed by the race detector on a loaded machine.
const MaxPingsOut = 2

// Logger returns a logger for the stack: discarded unless STACKTEST_LOG
// or E2E_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("STACKTEST_LOG") != "" || os.Getenv("E2E_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// Key returns the user nkey derived from name: the same name always gives
// the same key, and different names give different keys.
func Key(t testing.TB, name string) nkeys.KeyPair {
	t.Helper()
	raw := sha256.Sum256([]byte("stacktest:" + name))
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, raw[:])
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// NewKey returns a fresh random user nkey, for a test that needs a key no
// other test derives.
func NewKey(t testing.TB) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// LoadKey reads the nkey seed file path (as [WriteSeed] or the control
// service writes it: the seed and a newline).
func LoadKey(t testing.TB, path string) nkeys.KeyPair {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(b))
	if err != nil {
		t.Fatalf("seed file %s: %v", path, err)
	}
	return kp
}

// Pub returns the public key of kp.
func Pub(t testing.TB, kp nkeys.KeyPair) string {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// Seed returns the seed of kp.
func Seed(t testing.TB, kp nkeys.KeyPair) []byte {
	t.Helper()
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return seed
}

// WriteSeed writes seed to a new file (mode 0600) in a temporary directory
// and returns its path.
func WriteSeed(t testing.TB, name string, seed []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".nk")
	if err := os.WriteFile(path, append(append([]byte(nil), seed...), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type controlConfig struct {
	dataDir   string
	brokerURL string
	brokerTLS *tls.Config
	admin     nkeys.KeyPair
	websocket bool
}

// Option configures [StartControl].
type Option func(*controlConfig)

// WithDataDir keeps the control service's data in dir (default a fresh
// temporary directory).
func WithDataDir(dir string) Option { return func(c *controlConfig) { c.dataDir = dir } }

// WithBroker makes the control service use the broker at url (see
// [StartBroker]) instead of embedding one.
func WithBroker(url string) Option { return func(c *controlConfig) { c.brokerURL = url } }

// WithBrokerTLS makes the control service reach [WithBroker]'s broker
// with TLS configured by cfg (see [StartTLSBroker] and [ClientTLS]).
func WithBrokerTLS(cfg *tls.Config) Option { return func(c *controlConfig) { c.brokerTLS = cfg } }

// WithAdminKey makes kp the first admin's key: it is written to the data
// directory's admin.nk before the first start, where the control service
// picks it up instead of creating one.
func WithAdminKey(kp nkeys.KeyPair) Option { return func(c *controlConfig) { c.admin = kp } }

// WithWebSocket gives the embedded broker a WebSocket listener on a free
// loopback port, in clear text; its URL is svc.Broker().WebSocketURL().
// (With [StartControlWith], set Broker.WebSocketListen instead.)
func WithWebSocket() Option { return func(c *controlConfig) { c.websocket = true } }

// StartControl starts a control service with an embedded broker on a free
// loopback port (or on the broker [WithBroker] names) and stops it when the
// test ends.
func StartControl(t testing.TB, opts ...Option) *controlsvc.Service {
	t.Helper()
	var cfg controlConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.dataDir == "" {
		cfg.dataDir = t.TempDir()
	}
	if cfg.admin != nil {
		path := filepath.Join(cfg.dataDir, controlsvc.AdminKeyFile)
		if err := os.WriteFile(path, append(Seed(t, cfg.admin), '\n'), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var ws string
	if cfg.websocket {
		ws = "127.0.0.1:0"
	}
	return StartControlWith(t, controlsvc.Config{
		DataDir:   cfg.dataDir,
		BrokerURL: cfg.brokerURL,
		BrokerTLS: cfg.brokerTLS,
		// StartBroker's brokers have no JetStream: no durable audit.
		Audit:  controlsvc.AuditConfig{NotDurable: cfg.brokerURL != ""},
		Broker: broker.Config{Listen: "127.0.0.1:0", PingInterval: PingInterval, MaxPingsOut: MaxPingsOut, WebSocketListen: ws},
		Logger: Logger().With("side", "control"),
	})
}

// StartControlWith starts a control service configured by cfg as it is
// (an empty DataDir is the caller's mistake, not a default) and stops it
// when the test ends; a test may Close it earlier.
func StartControlWith(t testing.TB, cfg controlsvc.Config) *controlsvc.Service {
	t.Helper()
	svc, err := controlsvc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := svc.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); svc.Close() })
	return svc
}

// BrokerAuth creates the control service's keys in its data directory
// dataDir (or loads them) and returns what every broker must know of them.
func BrokerAuth(t testing.TB, dataDir string) broker.AuthKeys {
	t.Helper()
	keys, err := controlsvc.LoadOrCreateKeys(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := keys.BrokerAuth()
	if err != nil {
		t.Fatal(err)
	}
	return auth
}

// StartBroker starts a stand-alone broker configured from the keys in the
// control service's data directory dataDir (creating them), as cc-broker
// does, and shuts it down when the test ends. Start the control service on
// it with StartControl(t, WithDataDir(dataDir), WithBroker(b.ClientURL())).
func StartBroker(t testing.TB, dataDir string) *broker.Broker {
	t.Helper()
	auth := BrokerAuth(t, dataDir)
	return brokertest.StartWith(t, broker.Config{Listen: "127.0.0.1:0", Auth: auth, PingInterval: ExternalPingInterval, MaxPingsOut: MaxPingsOut, Logger: Logger().With("side", "broker")})
}

// AdminSeed returns the seed of the admin key the control service created
// (or was given) at first start.
func AdminSeed(t testing.TB, svc *controlsvc.Service) []byte {
	t.Helper()
	kp, err := keyfile.ReadSeed("key file", svc.AdminKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	return Seed(t, kp)
}

// AddOperator registers operator name with role and key kp (nil: the key
// [Key] derives from "operator:"+name) and returns its seed.
func AddOperator(t testing.TB, svc *controlsvc.Service, name, role string, kp nkeys.KeyPair) []byte {
	t.Helper()
	if kp == nil {
		kp = Key(t, "operator:"+name)
	}
	if _, err := svc.Registry().AddOperator(name, Pub(t, kp), role); err != nil {
		t.Fatal(err)
	}
	return Seed(t, kp)
}

// OperatorSeed registers operator name with role and a key derived from
// its name, and returns the seed.
func OperatorSeed(t testing.TB, svc *controlsvc.Service, name, role string) []byte {
	t.Helper()
	return AddOperator(t, svc, name, role, nil)
}

// Dial opens a plain NATS connection to url authenticating with kp and
// connection name name, as an agent (name = machine id) or an operator
// would; the inbox prefix is the operator inbox of kp. It returns the
// broker's answer as it is: a refused key is an error wrapping
// nats.ErrAuthorization.
func Dial(url string, kp nkeys.KeyPair, name string, opts ...nats.Option) (*nats.Conn, error) {
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	base := []nats.Option{
		nats.Name(name), nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(fleet.ControlInbox(pub)),
		nats.Timeout(5 * time.Second), nats.NoReconnect(),
	}
	return nats.Connect(url, append(base, opts...)...)
}

// Reconnecting is a [Dial] option that undoes its nats.NoReconnect: the
// connection reconnects as an operator's tools do, e.g. across a broker
// restart.
var Reconnecting nats.Option = func(o *nats.Options) error {
	o.AllowReconnect = true
	return nil
}

// Connect is [Dial] that fails the test on an error and closes the
// connection when the test ends.
func Connect(t testing.TB, url string, kp nkeys.KeyPair, name string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := Dial(url, kp, name, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Online reports whether machine id is in the control service's ONLINE set.
func Online(svc *controlsvc.Service, id string) bool {
	for _, s := range svc.Snapshot().Servers {
		if s.Machine == id {
			return true
		}
	}
	return false
}

// WaitOnline waits until every machine of ids is ONLINE.
func WaitOnline(t testing.TB, svc *controlsvc.Service, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := Await(svc, id, true); err != nil {
			t.Fatal(err)
		}
	}
}

// WaitOffline waits until no machine of ids is ONLINE.
func WaitOffline(t testing.TB, svc *controlsvc.Service, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := Await(svc, id, false); err != nil {
			t.Fatal(err)
		}
	}
}

// Await waits until machine id is ONLINE (online set) or not, for at most
// [WaitTimeout]. Unlike WaitOnline and WaitOffline it may run on any
// goroutine, e.g. in a [Hook].
func Await(svc *controlsvc.Service, id string, online bool) error {
	if poll(WaitTimeout, 5*time.Millisecond, func() bool { return Online(svc, id) == online }) {
		return nil
	}
	state := "ONLINE"
	if !online {
		state = "OFFLINE"
	}
	return fmt.Errorf("machine %s is not %s after %s", id, state, WaitTimeout)
}

// poll checks cond every interval until it holds (true) or d has passed
// (false).
func poll(d, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(every)
	}
	return true
}

// WaitFor checks cond every 20ms until it holds, for at most d, and fails
// the test naming what it waited for when it does not. cond may do a
// round trip (a call, a control request): the pace keeps that cheap.
func WaitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	if !poll(d, 20*time.Millisecond, cond) {
		t.Fatalf("timed out after %s waiting for %s", d, what)
	}
}
