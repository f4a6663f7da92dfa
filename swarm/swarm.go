// Package swarm simulates a fleet in one process: N agents, each a real
// nkey identity with its own connection authorised through the callout and
// serving the real function handlers against synthetic host data. It is
// how the benchmarks build 50,000 agents, and how an operator tries the
// system on a laptop (cc-swarm).
package swarm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/natstls"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Config configures a swarm.
type Config struct {
	// URL of the broker(s), comma-separated.
	URL string
	// TLSCA and AllowPlaintext are the members' agent.Config fields of
	// the same names: the CA that signed the broker's certificate, or
	// plain text to a broker off this host, allowed explicitly.
	TLSCA          string
	AllowPlaintext bool
	// N is the number of simulated agents.
	N int
	// Prefix names the machines: 10.a.b.c_<prefix><i>.
	Prefix string
	// Labels are given to every member when registered; each also gets
	// profile=<0..7> (its synthetic host) and swarm=<prefix>.
	Labels map[string]string
	// Concurrency bounds connections being set up at once (default 512).
	Concurrency int
	// SourceAddrs spreads connections to a loopback broker over
	// 127.0.0.2 … 127.0.0.(1+SourceAddrs) so more than ~28,000 connections
	// fit in the ephemeral port range (default: one per 20,000 agents).
	SourceAddrs int
	// Dir holds the synthetic host trees (default: a temporary directory).
	Dir string
	// KeysFile, when set, keeps the members' seeds: read when the file
	// exists (it must hold N), written (0600) when it does not, so a
	// later swarm with it connects as the same, registered machines.
	KeysFile string
	// MaxReconnectDelay caps each member's jittered reconnect backoff.
	MaxReconnectDelay time.Duration
	Logger            *slog.Logger
}

// Member is one simulated machine.
type Member struct {
	ID, Key string
	Labels  map[string]string
	kp      nkeys.KeyPair
	profile int
}

// Swarm is a running fleet of simulated agents.
type Swarm struct {
	cfg       Config
	members   []Member
	roots     []string
	shared    []*functions.Set // per synthetic host
	agents    []*agent.Agent
	connected atomic.Int64
	tmp       string
	// tls is loaded from Config.TLSCA once for every member.
	tls *tls.Config
}

// New creates the members' identities and synthetic hosts; Start connects them.
func New(cfg Config) (*Swarm, error) {
	if cfg.N <= 0 {
		return nil, errors.New("swarm: N must be at least 1")
	}
	if cfg.N > 1<<24 {
		return nil, fmt.Errorf("swarm: N = %d is more than the 16,777,216 machine ids the 10.0.0.0/8 naming allows", cfg.N)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "sim"
	}
	if err := fleet.ValidateName("swarm prefix", cfg.Prefix); err != nil {
		return nil, err
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 512
	}
	if cfg.SourceAddrs <= 0 {
		cfg.SourceAddrs = 1 + cfg.N/20000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Swarm{cfg: cfg}
	if cfg.TLSCA != "" {
		d, err := natstls.Config{CAFile: cfg.TLSCA}.Decide(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("swarm: %w", err)
		}
		s.tls = d.TLS
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "cc-swarm-")
		if err != nil {
			return nil, err
		}
		s.tmp, cfg.Dir = d, d
	}
	roots, err := WriteHosts(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("swarm: synthetic hosts: %w", err)
	}
	s.roots = roots
	for _, r := range roots {
		s.shared = append(s.shared, functions.New(&functions.Env{Root: r, Version: agent.Version + "-swarm"}))
	}
	kps, err := memberKeys(cfg.KeysFile, cfg.N)
	if err != nil {
		if s.tmp != "" {
			_ = os.RemoveAll(s.tmp)
		}
		return nil, err
	}
	s.members = make([]Member, cfg.N)
	for i := range s.members {
		kp := kps[i]
		pub, _ := kp.PublicKey()
		labels := map[string]string{"swarm": cfg.Prefix, "profile": fmt.Sprint(i % NumProfiles)}
		for k, v := range cfg.Labels {
			labels[k] = v
		}
		s.members[i] = Member{ID: MachineID(cfg.Prefix, i), Key: pub, Labels: labels, kp: kp, profile: i % NumProfiles}
	}
	return s, nil
}

// MachineID names member i of a swarm: 10.a.b.c_<prefix><i>.
func MachineID(prefix string, i int) string {
	n := i + 1
	return fmt.Sprintf("10.%d.%d.%d_%s%d", (n>>16)&255, (n>>8)&255, n&255, prefix, i)
}

// Registrations are the members as machines.import entries.
func (s *Swarm) Registrations() []fleet.MachineRequest {
	out := make([]fleet.MachineRequest, len(s.members))
	for i, m := range s.members {
		out[i] = fleet.MachineRequest{ID: m.ID, Key: m.Key, Labels: m.Labels}
	}
	return out
}

// Connected counts members whose connection is up (or was, since).
func (s *Swarm) Connected() int { return int(s.connected.Load()) }

// Start connects every member, at most Concurrency at a time, and returns
// when all have connected once or ctx ends. Members keep reconnecting on
// their own afterwards, like real agents.
func (s *Swarm) Start(ctx context.Context) error {
	sem := make(chan struct{}, s.cfg.Concurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	s.agents = make([]*agent.Agent, len(s.members))
	for i := range s.members {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Go(func() {
			up := make(chan struct{})
			var once sync.Once
			a, err := s.newAgent(i, func() { once.Do(func() { close(up) }) })
			if err == nil {
				err = a.Start(ctx)
			}
			if err != nil {
				<-sem
				mu.Lock()
				firstErr = errors.Join(firstErr, err)
				mu.Unlock()
				return
			}
			s.agents[i] = a
			select {
			case <-up:
				s.connected.Add(1)
			case <-ctx.Done():
			}
			<-sem
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

func (s *Swarm) newAgent(i int, onConnect func()) (*agent.Agent, error) {
	m := s.members[i]
	root := s.roots[m.profile]
	fns := functions.New(&functions.Env{Root: root, MachineID: m.ID, Version: agent.Version + "-swarm"})
	// Members on one synthetic host share its function instances (and
	// their caches), as processes on one machine would; machine-info stays
	// each member's own, since it reports the machine id.
	for _, spec := range s.shared[m.profile].Specs() {
		if f, ok := s.shared[m.profile].Lookup(spec.Name); ok && spec.Name != fleet.FnMachineInfo {
			_ = fns.Add(f)
		}
	}
	opts := []nats.Option{nats.ReconnectBufSize(64 << 10), nats.Timeout(30 * time.Second)}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	if loopbackOnly(s.cfg.URL) {
		dialer.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%s.cfg.SourceAddrs))}
	}
	return agent.New(agent.Config{
		URL: s.cfg.URL, TLS: s.tls, AllowPlaintext: s.cfg.AllowPlaintext, Key: m.kp, MachineID: m.ID, Root: root, Functions: fns,
		NoSamplers: true, OnConnect: onConnect, MaxReconnectDelay: s.cfg.MaxReconnectDelay,
		NATSOptions: opts, Dialer: dialer, Logger: s.cfg.Logger,
		// A benchmark's one workbench calls one simulated machine
		// hundreds of times a second (cc-perf's direct calls), which the
		// per-operator rate (agent.DefaultCallerRate) exists to refuse;
		// the share of call slots still applies.
		CallerRate: -1,
	})
}

// loopbackOnly reports whether every broker URL names a loopback IP, so
// connections may come from other 127.x source addresses.
func loopbackOnly(urls string) bool {
	for _, u := range strings.Split(urls, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil {
			return false
		}
		ip := net.ParseIP(pu.Hostname())
		if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
			return false
		}
	}
	return true
}

// Close disconnects every member and removes the synthetic hosts.
func (s *Swarm) Close() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, a := range s.agents {
		if a == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() { a.Close(); <-sem })
	}
	wg.Wait()
	if s.tmp != "" {
		_ = os.RemoveAll(s.tmp)
	}
}
