package stacktest

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Proxy forwards TCP connections from a loopback port to a broker, so a
// test can do to one client's connections what the network or the
// client's host would: stall them as a stopped process would (Pause), cut
// them (Cut), keep the client from reconnecting for a while (HoldNew).
// The bytes pass unchanged; the broker and the client are the real ones.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	paused  bool          // no byte and no close crosses
	holding bool          // new connections wait
	resume  chan struct{} // closed by Resume
	conns   map[net.Conn]struct{}
}

// StartProxy listens on a free loopback port and forwards each connection
// to target ("host:port" or a nats:// URL). It stops when the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: strings.TrimPrefix(target, "nats://"), resume: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.Resume()
		p.Cut()
	})
	return p
}

// URL is the proxy's address as a client connects to it.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Pause stalls every connection as a stopped client process would: no
// byte and no close crosses either way (the broker's pings go unanswered,
// its events pile up), and new connections wait, until Resume.
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused, p.holding = true, true
}

// HoldNew makes new connections wait (the client cannot reconnect) until
// Resume; established ones flow on.
func (p *Proxy) HoldNew() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holding = true
}

// Resume lets everything through again.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused || p.holding {
		close(p.resume)
		p.resume = make(chan struct{})
	}
	p.paused, p.holding = false, false
}

// Cut closes every established connection, both ways, at once.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

// wait returns once the gate is open: held (a new connection) or paused
// (an established one).
func (p *Proxy) wait(held func() bool) {
	for {
		p.mu.Lock()
		closed, ch := !held(), p.resume
		p.mu.Unlock()
		if closed {
			return
		}
		<-ch
	}
}

func (p *Proxy) isPaused() bool  { return p.paused }
func (p *Proxy) isHolding() bool { return p.holding }

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		go p.forward(c)
	}
}

func (p *Proxy) forward(c net.Conn) {
	p.wait(p.isHolding)
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		p.drop(c)
		return
	}
	p.mu.Lock()
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	go p.pipe(up, c)
	p.pipe(c, up)
}

// pipe copies src to dst until either fails, then closes both; while the
// proxy is paused nothing it has read is written, and no close is passed
// on.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.wait(p.isPaused)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	p.drop(dst)
	p.drop(src)
}

func (p *Proxy) drop(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}
