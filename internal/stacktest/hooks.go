package stacktest

import (
	"bytes"
	"net"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Hook runs Fn once: the first time the client is about to send bytes
// holding Sent to the broker (Fn runs before they leave), or has read bytes
// holding Received from it (Fn runs before the client sees them). Set one
// of Sent and Received.
//
// A hook orders real events around one message of a real protocol
// exchange, e.g. "a machine comes online after the caller's presence
// snapshot was answered but before its broadcast is published". The bytes
// themselves pass unchanged and in order. Fn runs on the client
// connection's I/O goroutine, so it must not use that connection.
type Hook struct {
	Sent, Received string
	Fn             func()
}

// WithHooks is a nats.Option dialing through a net.Conn that runs hooks.
// It replaces any other custom dialer.
func WithHooks(hooks ...Hook) nats.Option {
	d := &hookDialer{}
	for _, h := range hooks {
		d.hooks = append(d.hooks, &onceHook{Hook: h})
	}
	return nats.SetCustomDialer(d)
}

type onceHook struct {
	Hook
	once sync.Once
}

type hookDialer struct{ hooks []*onceHook }

func (d *hookDialer) Dial(network, address string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &hookConn{Conn: c, hooks: d.hooks}, nil
}

// hookConn watches the bytes both ways; a tail of each direction is kept
// so a match split across two reads or writes is still seen.
type hookConn struct {
	net.Conn
	hooks          []*onceHook
	mu             sync.Mutex
	sentTail, recv []byte
}

func (c *hookConn) Write(p []byte) (int, error) {
	c.check(&c.sentTail, p, func(h *onceHook) string { return h.Sent })
	return c.Conn.Write(p)
}

func (c *hookConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.check(&c.recv, p[:n], func(h *onceHook) string { return h.Received })
	}
	return n, err
}

// check runs each hook whose match appears in *tail + p, then keeps the
// end of that as the new tail.
func (c *hookConn) check(tail *[]byte, p []byte, match func(*onceHook) string) {
	c.mu.Lock()
	buf := append(append([]byte(nil), *tail...), p...)
	var run []*onceHook
	longest := 0
	for _, h := range c.hooks {
		m := match(h)
		longest = max(longest, len(m))
		if m != "" && bytes.Contains(buf, []byte(m)) {
			run = append(run, h)
		}
	}
	if keep := longest - 1; keep > 0 && len(buf) > keep {
		buf = buf[len(buf)-keep:]
	}
	*tail = buf
	c.mu.Unlock()
	for _, h := range run {
		h.once.Do(h.Fn)
	}
}
