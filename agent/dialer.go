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
type closingDialer struct {
	d    *net.Dialer
	mu   sync.Mutex
	prev net.Conn
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
	c.prev = conn
	c.mu.Unlock()
	return conn, nil
}
