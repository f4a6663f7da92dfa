package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// TestLeafSiteTTLCutOff: the finding 7 with real brokers and a
// real control service in-process. A site's broker links to the hub
// through a loopback proxy the test can cut. A machine registered to the
// site is connected there; the link is cut; the machine is removed at the
// hub, which cannot reach the site ("closed 0"). Its connection at the
// site ends when its credentials expire, --site-user-ttl after they were
// issued, while the link is still down (presence resync is an hour away,
// so it is not what ends it), and its reconnection is refused. A hub
// operator's connection, with the normal hour-long credentials, is
// untouched throughout. When the link returns the removed machine stays
// out and the site's other machine comes back.
func TestLeafSiteTTLCutOff(t *testing.T) {
	const siteTTL = 2 * time.Second
	dir := t.TempDir()
	hub, auth, leafPort, sites := startLeafHub(t, dir, leafSecret, "dc2")
	svc := stacktest.StartControlWith(t, controlsvc.Config{DataDir: dir, BrokerURL: hub.ClientURL(),
		Audit: controlsvc.AuditConfig{NotDurable: true}, ResyncInterval: time.Hour, SiteUserTTL: siteTTL,
		LeafSites: sites, Logger: stacktest.Logger().With("side", "control")})
	link := startTCPLink(t, "127.0.0.1:"+itoa(leafPort))
	site := startSiteBrokerAt(t, auth, "nats-leaf://"+link.addr(), "dc2", leafSecret, "site-dc2")
	waitLinked(t, site)

	const machine = "10.3.2.7_dc2-web"
	startSiteAgent(t, svc, site.ClientURL(), machine, "dc2")
	stacktest.WaitFor(t, machine+" ONLINE", 10*time.Second, func() bool { return stacktest.Online(svc, machine) })

	opsSeed := newOperator(t, svc, "ops", "admin")
	var hubDrops []error
	var mu sync.Mutex
	ops := operatorConn(t, hub.ClientURL(), opsSeed, nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
		mu.Lock()
		defer mu.Unlock()
		hubDrops = append(hubDrops, err)
	}))

	const victim = "10.3.2.8_dc2-stolen"
	victimKP, _ := nkeys.CreateUser()
	victimPub, _ := victimKP.PublicKey()
	if _, err := svc.Registry().SetMachineAt(victim, victimPub, "dc2", nil, "test", false); err != nil {
		t.Fatal(err)
	}
	var errsMu sync.Mutex
	var errs []error // what the broker told the victim's connection, in order
	errsSince := func(i int, match func(error) bool) bool {
		errsMu.Lock()
		defer errsMu.Unlock()
		for _, err := range errs[min(i, len(errs)):] {
			if match(err) {
				return true
			}
		}
		return false
	}
	isExpiry := func(err error) bool { return errors.Is(err, nats.ErrAuthExpired) }
	vc, err := connectAs(site.ClientURL(), victimKP, victim, nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			errsMu.Lock()
			defer errsMu.Unlock()
			errs = append(errs, err)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	// Credentials at the site expire every siteTTL and are renewed
	// transparently.
	stacktest.WaitFor(t, "the machine's credentials at the site to expire", siteTTL+5*time.Second, func() bool { return errsSince(0, isExpiry) })
	stacktest.WaitFor(t, "the machine reconnected after a renewal and ONLINE", 10*time.Second, func() bool { return vc.IsConnected() && stacktest.Online(svc, victim) })

	link.cut()
	stacktest.WaitFor(t, "the site's leaf link down", 10*time.Second, func() bool {
		return site.Server().NumLeafNodes() == 0 && hub.Server().NumLeafNodes() == 0
	})
	cl, err := bench.Connect(hub.ClientURL(), bench.WithSeedFile(opsSeed))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	res, err := cl.RemoveMachine(context.Background(), victim)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("machines rm across the cut link: closed %d live connections", res.Closed)
	errsMu.Lock()
	removedAt := len(errs)
	errsMu.Unlock()
	// Its credentials were issued before the cut: they expire within
	// siteTTL, and it cannot be authorised again without the hub: its
	// connection is down, and its next attempt is refused.
	stacktest.WaitFor(t, "the removed machine's connection at the cut-off site to end", siteTTL+5*time.Second, func() bool {
		return !vc.IsConnected()
	})
	stacktest.WaitFor(t, "the removed machine refused at the cut-off site", 15*time.Second, func() bool {
		return errsSince(removedAt, func(err error) bool { return !isExpiry(err) })
	})
	if !link.isCut() || site.Server().NumLeafNodes() != 0 {
		t.Fatalf("the link came back (site leaf connections %d) before the removal took effect; the test proves nothing", site.Server().NumLeafNodes())
	}
	if vc.IsConnected() {
		t.Fatal("the removed machine is connected at the site while the link is down")
	}
	errsMu.Lock()
	t.Logf("the removed machine's connection was told: %v", errs[removedAt:])
	errsMu.Unlock()

	link.heal()
	stacktest.WaitFor(t, machine+" back ONLINE after the link returned", 20*time.Second, func() bool { return stacktest.Online(svc, machine) })
	if vc.IsConnected() {
		t.Error("the removed machine was admitted again after the link returned")
	}
	stacktest.WaitFor(t, "the removed machine not ONLINE", 10*time.Second, func() bool { return !stacktest.Online(svc, victim) })
	if !ops.IsConnected() {
		t.Error("the hub operator's connection is down")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(hubDrops) > 0 {
		t.Errorf("the hub operator's connection (normal credentials) dropped: %v", hubDrops)
	}
}

// tcpLink is a loopback TCP proxy to target that the test can cut (close
// every connection through it and refuse new ones) and heal.
type tcpLink struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
}

func startTCPLink(t *testing.T, target string) *tcpLink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpLink{l: l, target: target, conns: map[net.Conn]bool{}}
	go p.accept()
	t.Cleanup(func() { l.Close(); p.cut() })
	return p
}

func (p *tcpLink) addr() string { return p.l.Addr().String() }

func (p *tcpLink) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, up) {
			continue
		}
		go p.pipe(up, c)
		go p.pipeFromHub(c, up)
	}
}

// track records a proxied pair, or closes it when the link went down
// meanwhile.
func (p *tcpLink) track(a, b net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		a.Close()
		b.Close()
		return false
	}
	p.conns[a], p.conns[b] = true, true
	return true
}

func (p *tcpLink) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// pipeFromHub copies the hub's side to the site, dropping the hub's own
// leaf URLs from its INFO lines: a site broker adds the URLs the hub
// advertises to those it dials, and would otherwise go around the proxy
// once cut. It also drops the hub's offer of compression, which would
// hide later INFO lines from this filter.
func (p *tcpLink) pipeFromHub(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	r := bufio.NewReader(src)
	for {
		line, err := r.ReadBytes('\n')
		if rest, ok := bytes.CutPrefix(line, []byte("INFO ")); ok {
			var info map[string]any
			if json.Unmarshal(bytes.TrimSpace(rest), &info) == nil {
				delete(info, "leafnode_urls")
				delete(info, "compression") // keeps later INFO lines readable

				b, _ := json.Marshal(info)
				line = append(append([]byte("INFO "), b...), "\r\n"...)
			}
		}
		if _, werr := dst.Write(line); werr != nil || err != nil {
			return
		}
	}
}

func (p *tcpLink) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *tcpLink) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

func (p *tcpLink) isCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down
}
