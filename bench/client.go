package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/keyfile"
	"github.com/commandcontrol/commandcontrol/internal/natstls"
)

// DefaultName is the connection name a [Client] uses unless [WithName] says
// otherwise. It is not a valid machine id, so a key the broker does not know
// is never mistaken for a machine asking to join (and listed as pending).
const DefaultName = "cc-bench (operator)"

// DefaultTimeout bounds a request (presence snapshot, control API) whose
// context has no deadline, the connect handshake, and a call without
// [CallOptions.Timeout].
const DefaultTimeout = 5 * time.Second

// Errors a caller may branch on. They are wrapped with detail; test with
// errors.Is.
var (
	// ErrNoKey is returned by operations that need the operator's key
	// (the control API) on a client connected without one.
	ErrNoKey = errors.New("no operator key")
	// ErrBadSeed means the key given is not an operator (user) nkey seed.
	ErrBadSeed = errors.New("not an operator nkey seed")
	// ErrKeyFileMode means the seed file is refused as unsafe: group or
	// others can read it, it is a symbolic link, another user owns it, or
	// others can write its directory (the error says which, and the fix).
	ErrKeyFileMode = keyfile.ErrUnsafe
	// ErrUnreachable means no broker accepted a connection at the URL.
	ErrUnreachable = errors.New("broker unreachable")
	// ErrRefused means the broker refused the key: it is not registered as
	// an operator, or the control service that vets connections is down.
	ErrRefused = errors.New("the broker refused this key")
	// ErrNoService means no control service answered: nobody answers a
	// presence or control request, or (from [Connect], also wrapping
	// [ErrRefused]) the broker refused the connection only after its
	// auth timeout, as it does when no control service answers its auth
	// callout. cc-control is down, or not connected to this broker.
	ErrNoService = errors.New("no control service answered")
	// ErrPlaintext means Connect refused, before dialling, to speak plain
	// text to a broker that is not on this host (loopback): verify it with
	// [WithTLSCA] (or a tls:// URL), or allow plain text with
	// [WithPlaintext].
	ErrPlaintext = natstls.ErrPlaintext
	// ErrTLS means the TLS handshake with the broker failed: its
	// certificate is not signed by the CA given, does not name the host,
	// or the broker wants a client certificate ([WithClientCert]).
	ErrTLS = natstls.ErrTLS
)

// Client is one operator connection to the broker. It is safe for
// concurrent use. Create it with [Connect] or [NewClient].
type Client struct {
	nc    *nats.Conn
	key   string
	owned bool
	errs  *errHub // nil for a connection made elsewhere
}

type config struct {
	name    string
	timeout time.Duration
	seed    []byte
	seedErr error
	natsOpt []nats.Option
	tls     natstls.Config
}

// Option configures [Connect].
type Option func(*config)

// WithSeedFile authenticates with the operator nkey seed (text "SU…") read
// from path.
func WithSeedFile(path string) Option {
	return func(c *config) {
		// Whoever can read the seed is that operator: the same rule
		// cc-control and cc-agent apply to theirs.
		b, err := keyfile.Read("operator key file", path)
		if errors.Is(err, keyfile.ErrUnsafe) {
			c.seedErr = err
			return
		}
		if err != nil {
			c.seedErr = fmt.Errorf("read operator key: %w", err)
			return
		}
		c.seed = b
	}
}

// WithSeed authenticates with the operator nkey seed text ("SU…").
func WithSeed(seed []byte) Option { return func(c *config) { c.seed = seed } }

// WithName sets the connection name the broker shows (default [DefaultName]).
// Choose one that is not a valid machine id (put a space in it): the control
// service records a refused connection named like a machine as a pending
// machine.
func WithName(name string) Option { return func(c *config) { c.name = name } }

// WithConnectTimeout bounds the connect handshake (default [DefaultTimeout]).
func WithConnectTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithTLSCA verifies the broker against the CA certificate(s) in the PEM
// file at path, and turns TLS on for every URL.
func WithTLSCA(path string) Option { return func(c *config) { c.tls.CAFile = path } }

// WithClientCert presents the client certificate in certFile (PEM, with
// its key in keyFile) to a broker that requires mutual TLS; it turns TLS
// on.
func WithClientCert(certFile, keyFile string) Option {
	return func(c *config) { c.tls.CertFile, c.tls.KeyFile = certFile, keyFile }
}

// WithTLS uses cfg for TLS (e.g. certificates held in memory); it turns
// TLS on. [WithTLSCA] and [WithClientCert] add to a copy of it.
func WithTLS(cfg *tls.Config) Option { return func(c *config) { c.tls.TLS = cfg } }

// WithPlaintext allows plain text to a broker that is not on this host,
// for a network you trust. Without it, and without TLS, [Connect]
// refuses such a URL with [ErrPlaintext] before dialling; loopback
// (127.0.0.0/8, ::1, localhost) is always allowed.
func WithPlaintext() Option { return func(c *config) { c.tls.AllowPlaintext = true } }

// sdkNames spell the TLS settings in Connect's errors.
var sdkNames = natstls.Names{CA: "bench.WithTLSCA(file)", Cert: "bench.WithClientCert(certFile, keyFile)", Plaintext: "bench.WithPlaintext()"}

// WithNATSOptions passes further options to nats.Connect. Use the
// options above for TLS: Connect decides plain text or TLS from them.
func WithNATSOptions(opts ...nats.Option) Option {
	return func(c *config) { c.natsOpt = append(c.natsOpt, opts...) }
}

// Connect dials the broker at url (comma-separated for several) as an
// operator. With a seed it signs the broker's nonce with the operator's nkey
// and uses the operator's private inbox prefix, [fleet.OperatorInbox]; the
// broker lets an operator read replies only there.
//
// The connection is TLS when [WithTLSCA], [WithClientCert] or [WithTLS] is
// given or a URL is tls://; plain text goes only to loopback addresses
// unless [WithPlaintext]. Errors wrap [ErrUnreachable], [ErrRefused],
// [ErrBadSeed], [ErrPlaintext] or [ErrTLS] where they apply.
func Connect(url string, opts ...Option) (*Client, error) {
	cfg := config{name: DefaultName, timeout: DefaultTimeout, tls: natstls.Config{Names: sdkNames}}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.seedErr != nil {
		return nil, cfg.seedErr
	}
	conn, err := cfg.tls.Decide(url)
	if err != nil {
		return nil, err
	}
	hub := &errHub{}
	nopts := []nats.Option{nats.Name(cfg.name), nats.Timeout(cfg.timeout), nats.ErrorHandler(hub.handler),
		nats.DisconnectErrHandler(hub.disconnected)}
	var key string
	if len(cfg.seed) > 0 {
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(cfg.seed))))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadSeed, err)
		}
		if key, err = kp.PublicKey(); err != nil || !nkeys.IsValidPublicUserKey(key) {
			return nil, fmt.Errorf("%w: the seed is not a user seed (it should start with SU)", ErrBadSeed)
		}
		nopts = append(nopts, nats.Nkey(key, kp.Sign), nats.CustomInboxPrefix(fleet.ControlInbox(key)))
	}
	dial := &handshakeClock{d: &net.Dialer{Timeout: cfg.timeout}}
	nopts = append(nopts, conn.Options(dial, cfg.timeout)...)
	nc, err := nats.Connect(url, append(nopts, cfg.natsOpt...)...)
	err = conn.Explain(err, url)
	waited, dialled := dial.since()
	switch {
	case errors.Is(err, nats.ErrAuthorization) && dialled && waited >= CalloutSilence:
		return nil, fmt.Errorf("%w: the broker at %s is up but refused this connection only after %s, as it does when no control service answers it: "+
			"cc-control is down or not connected to this broker (%w)", ErrNoService, url, waited.Round(10*time.Millisecond), ErrRefused)
	case dialled && isTimeout(err) && !errors.Is(err, ErrTLS):
		return nil, fmt.Errorf("%w: the broker at %s is up but did not admit this connection within %s: "+
			"cc-control is down or not connected to this broker, or slow (%v)", ErrNoService, url, cfg.timeout, err)
	case errors.Is(err, nats.ErrAuthorization):
		return nil, fmt.Errorf("%w (%s at %s): %v", ErrRefused, key, url, err)
	case errors.Is(err, ErrTLS):
		return nil, err
	case errors.Is(err, nats.ErrNoServers):
		return nil, fmt.Errorf("%w at %s: %v", ErrUnreachable, url, err)
	case err != nil:
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	return &Client{nc: nc, key: key, owned: true, errs: hub}, nil
}

// CalloutSilence is how long after its TCP connection a refusal must
// come for [Connect] to report it as no control service answering
// ([ErrNoService]) rather than a refused key: the broker refuses a
// connection whose auth callout nobody answers at its auth timeout
// (seconds: cc-broker's is 4/5 of its ping interval, at most 5 s), while
// a control service that refuses a key answers in milliseconds.
const CalloutSilence = time.Second

// handshakeClock dials for nats.go and remembers when the last
// connection was made, to tell how long the broker took to answer the
// handshake.
type handshakeClock struct {
	d  *net.Dialer
	mu sync.Mutex
	at time.Time
}

// Dial implements nats.CustomDialer.
func (h *handshakeClock) Dial(network, address string) (net.Conn, error) {
	c, err := h.d.Dial(network, address)
	if err == nil {
		h.mu.Lock()
		h.at = time.Now()
		h.mu.Unlock()
	}
	return c, err
}

// since returns the time from the last connection made, and whether one
// was.
func (h *handshakeClock) since() (time.Duration, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.at.IsZero() {
		return 0, false
	}
	return time.Since(h.at), true
}

// isTimeout reports whether err is a connection attempt that timed out.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// NewClient wraps an established connection. operatorKey is the public key
// the connection authenticated with ("" for none); the connection should use
// the inbox prefix [fleet.ControlInbox] of that key. Close on the client
// does not close nc.
func NewClient(nc *nats.Conn, operatorKey string) *Client {
	return &Client{nc: nc, key: operatorKey}
}

// Key returns the operator's public nkey, or "" when connected without one.
func (c *Client) Key() string { return c.key }

// Conn returns the underlying NATS connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// Close closes the connection if [Connect] opened it.
func (c *Client) Close() {
	if c.owned {
		c.nc.Close()
	}
}

// withTimeout gives ctx the default deadline when it has none.
func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}

// request sends body to subject and returns the reply body, turning the
// micro error headers into a *fleet.Error and "no responders" into
// ErrNoService.
func (c *Client) request(ctx context.Context, subject string, body []byte) ([]byte, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	for {
		data, err := c.requestOnce(ctx, subject, body)
		if !waitToRetry(ctx, err) {
			return data, err
		}
	}
}

// waitToRetry reports whether err is the control service's 429 with a
// retry time that ctx leaves room for, after waiting it out: a paged
// listing or a script past its operator's limit is slowed down to the
// limit rather than failed. A wait longer than ctx allows returns false,
// and the 429 is the caller's.
func waitToRetry(ctx context.Context, err error) bool {
	var fe *retryable
	if !errors.As(err, &fe) || fe.after <= 0 {
		return false
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) < fe.after {
		return false
	}
	t := time.NewTimer(fe.after)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// retryable is a 429 that says when to retry; it unwraps to the
// *fleet.Error.
type retryable struct {
	fe    *fleet.Error
	after time.Duration
}

func (r *retryable) Error() string { return r.fe.Error() }
func (r *retryable) Unwrap() error { return r.fe }

func (c *Client) requestOnce(ctx context.Context, subject string, body []byte) ([]byte, error) {
	msg, err := c.nc.RequestWithContext(ctx, subject, body)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, fmt.Errorf("%w on %s: is cc-control running?", ErrNoService, subject)
	case errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("no reply on %s in time: %w", subject, err)
	case err != nil:
		return nil, fmt.Errorf("request %s: %w", subject, err)
	}
	if err := replyErr(msg); err != nil {
		return nil, err
	}
	return msg.Data, nil
}

// replyErr is replyError as an error: a *retryable when the reply says
// when to retry, else the *fleet.Error, or nil.
func replyErr(msg *nats.Msg) error {
	fe := replyError(msg)
	if fe == nil {
		return nil
	}
	if ms, err := strconv.Atoi(msg.Header.Get(fleet.HeaderRetryAfter)); err == nil && fe.Code == fleet.CodeTooManyRequests && ms > 0 {
		return &retryable{fe: fe, after: time.Duration(ms) * time.Millisecond}
	}
	return fe
}

// replyError returns the *fleet.Error a reply carries in its micro error
// headers, or nil.
func replyError(msg *nats.Msg) *fleet.Error {
	if msg.Header == nil {
		return nil
	}
	return fleet.ErrorFromHeader(msg.Header.Get(fleet.HeaderErrorCode), msg.Header.Get(fleet.HeaderError))
}
