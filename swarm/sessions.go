package swarm

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// FnLatencyCheck is the function simulated sessions expose: the seed's
// example, answered with fixed small numbers (no real fetch).
const FnLatencyCheck = "latencyCheck"

// DefaultSessionNet is where simulated sessions' source addresses come
// from when the broker is on loopback: session i of the net binds
// 127.64.0.0 + 1 + i, so a --sites file can place them.
const DefaultSessionNet = "127.64.0.0/10"

// BaselineSessionSubject is what baseline session responder i answers:
// a plain subject, no auth, no framework.
func BaselineSessionSubject(i int) string { return "raw.sfn." + strconv.Itoa(i) + "." + FnLatencyCheck }

// SessionsConfig configures simulated sessions.
type SessionsConfig struct {
	// URL is the broker's WebSocket listener: ws://HOST:PORT (or wss://).
	URL string
	// TLS, for wss://, verifies the broker (nil: the system's roots).
	TLS *tls.Config
	// N is the number of sessions.
	N int
	// App is the app the sessions join (it must be registered, public).
	App string
	// Platform is what each session declares (default "device").
	Platform string
	// Net is the IPv4 network source addresses come from when the broker
	// is on loopback (default DefaultSessionNet): session i binds the
	// net's address 1 + First + i. Ignored for a broker off this host.
	Net string
	// First is the index in Net of this process's first session (a
	// harness splits a fleet over processes).
	First int
	// Concurrency bounds connections being set up at once (default 256).
	Concurrency int
	// Baseline runs plain responders instead: no key, no hello, each
	// answering BaselineSessionSubject(First + i) (the benchmark's point
	// of comparison, against a plain nats-server with no auth).
	Baseline bool
	// MaxReconnectDelay caps each session's jittered reconnect backoff.
	MaxReconnectDelay time.Duration
	Logger            *slog.Logger
}

// simSession is one simulated session.
type simSession struct {
	id   string // fleet.SessionID (empty for a baseline responder)
	kp   nkeys.KeyPair
	addr net.IP // source address (nil: the kernel's pick)
	nc   *nats.Conn
}

// Sessions is a running set of simulated sessions: each a real nats.go
// connection over WebSocket with a user nkey of its own and a
// fleet.SessionHello as its token, answering latencyCheck calls on its
// own subjects as a session of the app would.
type Sessions struct {
	cfg       SessionsConfig
	hello     []byte
	sess      []simSession
	connected atomic.Int64
	answered  atomic.Int64
	refused   atomic.Int64
}

// NewSessions checks cfg and makes the sessions' keys; Start connects them.
func NewSessions(cfg SessionsConfig) (*Sessions, error) {
	if cfg.N <= 0 {
		return nil, errors.New("sessions: N must be at least 1")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return nil, fmt.Errorf("sessions: broker URL %q: sessions connect over WebSocket; give ws://HOST:PORT or wss://HOST:PORT (the broker's --websocket-listen)", cfg.URL)
	}
	if cfg.First < 0 {
		return nil, fmt.Errorf("sessions: first index %d: want 0 or more", cfg.First)
	}
	if cfg.Platform == "" {
		cfg.Platform = fleet.PlatformDevice
	}
	if cfg.Net == "" {
		cfg.Net = DefaultSessionNet
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 256
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Sessions{cfg: cfg, sess: make([]simSession, cfg.N)}
	if loopbackOnly(cfg.URL) {
		addrs, err := SessionAddrs(cfg.Net, cfg.First, cfg.N)
		if err != nil {
			return nil, err
		}
		for i := range s.sess {
			s.sess[i].addr = addrs[i]
		}
	}
	if cfg.Baseline {
		return s, nil
	}
	if err := fleet.ValidateName("app", cfg.App); err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	if s.hello, err = json.Marshal(fleet.SessionHello{App: cfg.App, Platform: cfg.Platform, UserAgent: "cc-swarm", AppVersion: "sim"}); err != nil {
		return nil, err
	}
	for i := range s.sess {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return nil, err
		}
		pub, _ := kp.PublicKey()
		s.sess[i].kp, s.sess[i].id = kp, fleet.SessionID(cfg.App, pub)
	}
	return s, nil
}

// SessionAddrs returns the source addresses of sessions first … first+n-1
// of network cidr (an IPv4 network on loopback): its addresses 1+first
// onwards, never its last (broadcast) address.
func SessionAddrs(cidr string, first, n int) ([]net.IP, error) {
	ip, ipnet, err := net.ParseCIDR(cidr)
	if err != nil || ip.To4() == nil {
		return nil, fmt.Errorf("sessions: source network %q: want an IPv4 CIDR on loopback, e.g. %s", cidr, DefaultSessionNet)
	}
	if !ip.IsLoopback() {
		return nil, fmt.Errorf("sessions: source network %s is not on loopback (127.0.0.0/8): simulated sessions bind local addresses", cidr)
	}
	ones, _ := ipnet.Mask.Size()
	size := uint64(1) << (32 - ones)
	if uint64(first)+uint64(n)+2 > size {
		return nil, fmt.Errorf("sessions: source network %s has %d usable addresses; sessions %d to %d do not fit: use a larger network", cidr, max(0, int64(size)-2), first, first+n-1)
	}
	base := binary.BigEndian.Uint32(ipnet.IP.To4())
	out := make([]net.IP, n)
	for i := range out {
		a := make(net.IP, 4)
		binary.BigEndian.PutUint32(a, base+1+uint32(first+i))
		out[i] = a
	}
	return out, nil
}

// IDs are the sessions' ids, in order (empty for a baseline).
func (s *Sessions) IDs() []string {
	out := make([]string, len(s.sess))
	for i := range s.sess {
		out[i] = s.sess[i].id
	}
	return out
}

// Addr is session i's source address ("" when the kernel picks it).
func (s *Sessions) Addr(i int) string {
	if s.sess[i].addr == nil {
		return ""
	}
	return s.sess[i].addr.String()
}

// Connected counts sessions whose connection is up (or was, since).
func (s *Sessions) Connected() int { return int(s.connected.Load()) }

// Answered counts the calls answered.
func (s *Sessions) Answered() int64 { return s.answered.Load() }

// Refused counts the calls refused (a reply subject the session may not
// answer on, a call id not the reply's call token).
func (s *Sessions) Refused() int64 { return s.refused.Load() }

// Start connects every session, at most Concurrency at a time, and
// returns when all have connected once or ctx ends. A session that cannot
// connect is an error (the first few are named).
func (s *Sessions) Start(ctx context.Context) error {
	sem := make(chan struct{}, s.cfg.Concurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	failed := 0
	for i := range s.sess {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := s.connect(i); err != nil {
				mu.Lock()
				if failed++; len(errs) < 3 {
					errs = append(errs, fmt.Errorf("session %d (from %s): %w", s.cfg.First+i, s.Addr(i), err))
				}
				mu.Unlock()
				return
			}
			s.connected.Add(1)
		})
	}
	wg.Wait()
	if failed > 0 {
		return fmt.Errorf("sessions: %d of %d did not connect: %w", failed, len(s.sess), errors.Join(errs...))
	}
	return ctx.Err()
}

func (s *Sessions) connect(i int) error {
	ss := &s.sess[i]
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	if ss.addr != nil {
		// nats.go dials the TCP connection of a ws:// URL with this
		// dialer too, then upgrades it (nats.go createConn).
		dialer.LocalAddr = &net.TCPAddr{IP: ss.addr}
	}
	name := "sim-session"
	if ss.id != "" {
		name = ss.id
	}
	opts := []nats.Option{nats.Name(name), nats.SetCustomDialer(dialer), nats.Timeout(30 * time.Second),
		nats.ReconnectBufSize(64 << 10), nats.MaxReconnects(-1), nats.ReconnectJitter(100*time.Millisecond, time.Second)}
	if s.cfg.MaxReconnectDelay > 0 {
		opts = append(opts, nats.ReconnectWait(s.cfg.MaxReconnectDelay/2))
	}
	if s.cfg.TLS != nil {
		opts = append(opts, nats.Secure(s.cfg.TLS))
	}
	if !s.cfg.Baseline {
		pub, _ := ss.kp.PublicKey()
		opts = append(opts, nats.Nkey(pub, ss.kp.Sign), nats.Token(string(s.hello)))
	}
	log := s.cfg.Logger
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		log.Debug("session connection error", "session", name, "error", err)
	}))
	nc, err := nats.Connect(s.cfg.URL, opts...)
	if err != nil {
		return err
	}
	if s.cfg.Baseline {
		idx := s.cfg.First + i
		_, err = nc.Subscribe(BaselineSessionSubject(idx), func(m *nats.Msg) {
			body, _ := latencyResult(m.Data)
			if m.Respond(body) == nil {
				s.answered.Add(1)
			}
		})
	} else {
		_, err = nc.Subscribe(fleet.SessionFnWildcard(ss.id, FnLatencyCheck), func(m *nats.Msg) { s.answer(nc, ss.id, m) })
	}
	if err == nil {
		err = nc.Flush()
	}
	if err == nil {
		err = nc.LastError() // a permission refused to the subscription
	}
	if err != nil {
		nc.Close()
		return err
	}
	ss.nc = nc
	return nil
}

// answer handles one call of session id as a session library does:
// answered only on a reply subject fleet.AgentReply accepts for the
// caller (the last token of the subject), echoing Cc-Call and Cc-Args.
func (s *Sessions) answer(nc *nats.Conn, id string, m *nats.Msg) {
	caller := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	reply, err := fleet.AgentReply(m.Reply, caller, id)
	if err != nil {
		// Nowhere this session may answer: the broker would refuse it.
		s.refused.Add(1)
		return
	}
	out := nats.NewMsg(reply)
	callID := m.Header.Get(fleet.HeaderCallID)
	if callID != "" && len(callID) <= fleet.MaxCallIDLen {
		out.Header.Set(fleet.HeaderCallID, callID)
	}
	out.Header.Set(fleet.HeaderArgs, fleet.ArgsDigest(m.Data))
	out.Header.Set(fleet.HeaderFunction, FnLatencyCheck)
	out.Header.Set(fleet.HeaderDuration, "0")
	var fail *fleet.Error
	switch {
	case len(callID) > fleet.MaxCallIDLen:
		fail = fleet.Errorf(fleet.CodeBadRequest, "the %s header is %d bytes; at most %d are allowed", fleet.HeaderCallID, len(callID), fleet.MaxCallIDLen)
	default:
		if err := fleet.CheckCallID(reply, callID); err != nil {
			fail = fleet.Errorf(fleet.CodeBadRequest, "%v", err)
			break
		}
		body, err := latencyResult(m.Data)
		if err != nil {
			fail = fleet.Errorf(fleet.CodeBadRequest, "%v", err)
			break
		}
		out.Data = body
	}
	if fail != nil {
		s.refused.Add(1)
		out.Header.Set(fleet.HeaderErrorCode, strconv.Itoa(fail.Code))
		out.Header.Set(fleet.HeaderError, fail.Description)
	}
	if nc.PublishMsg(out) == nil && fail == nil {
		s.answered.Add(1)
	}
}

// LatencyArgs are latencyCheck's arguments.
type LatencyArgs struct {
	URL   string `json:"url"`
	Count int    `json:"count,omitempty"`
}

// LatencyResult is latencyCheck's answer, as the session library's
// built-in implementation shapes it.
type LatencyResult struct {
	URL      string  `json:"url"`
	Count    int     `json:"count"`
	MinMS    float64 `json:"min_ms"`
	MedianMS float64 `json:"median_ms"`
	MaxMS    float64 `json:"max_ms"`
	Status   int     `json:"status"`
	Bytes    int     `json:"bytes"`
}

// latencyResult answers latencyCheck's arguments with fixed small numbers.
func latencyResult(args []byte) ([]byte, error) {
	var a LatencyArgs
	if len(args) > 0 {
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, fmt.Errorf("latencyCheck arguments: want a JSON object like {\"url\":\"https://example.com/\",\"count\":3}: %v", err)
		}
	}
	if a.Count <= 0 {
		a.Count = 3
	}
	return json.Marshal(LatencyResult{URL: a.URL, Count: min(a.Count, 20), MinMS: 1.2, MedianMS: 1.5, MaxMS: 2.1, Status: 200, Bytes: 512})
}

// Close disconnects every session.
func (s *Sessions) Close() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range s.sess {
		if nc := s.sess[i].nc; nc != nil {
			sem <- struct{}{}
			wg.Go(func() { nc.Close(); <-sem })
		}
	}
	wg.Wait()
}
