package agent

import (
	"net"
	"sync"
	"time"
)

// closingDialer dials the agent's connection and closes the previous
// socket when a new one is dialled. nats.go keeps a socket whose handshake
// failed (refused, timed out) until the garbage collector finds it; an
// agent retrying while it is not yet accepted, or a host of simulated
// agents reconnecting after a broker restart, would otherwise pile up
// half-closed sockets until it runs out of file descriptors. The agent has
// one connection at a time, so any earlier socket is dead by then.
//
// It also remembers when it last connected: a refusal that comes as late
// as the broker's auth timeout is the broker giving up on a control
// service that does not answer its callout, not a refusal of this
// machine (see Agent.connectError).
type closingDialer struct {
	d    *net.Dialer
	mu   sync.Mutex
	prev net.Conn
	at   time.Time // when prev was connected (monotonic)
}

func newClosingDialer(d *net.Dialer) *closingDialer {
	if d == nil {
		d = &net.Dialer{Timeout: 10 * time.Second}
	}
	return &closingDialer{d: d}
}

// Dial implements nats.CustomDialer.
func (c *closingDialer) Dial(network, address string) (net.Conn, error) {
	c.mu.Lock()
	prev := c.prev
	c.prev = nil
	c.mu.Unlock()
	if prev != nil {
		_ = prev.Close()
	}
	conn, err := c.d.Dial(network, address)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.prev, c.at = conn, time.Now()
	c.mu.Unlock()
	return conn, nil
}

// sinceConnected returns how long ago the last connection was made, and
// whether one was.
func (c *closingDialer) sinceConnected() (time.Duration, bool) {
	if c == nil {
		return 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() {
		return 0, false
	}
	return time.Since(c.at), true
}
