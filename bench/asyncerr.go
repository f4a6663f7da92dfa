package bench

import (
	"errors"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// errHub fans the connection's asynchronous errors (a permissions violation
// is reported that way, not by Publish) out to the calls waiting for them.
type errHub struct {
	mu   sync.Mutex
	subs map[chan error]struct{}
	// lost is why the connection last dropped (nil: never, or no reason).
	lost error
}

// disconnected records why the connection dropped, for a watch to tell.
func (h *errHub) disconnected(_ *nats.Conn, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lost = err
}

// takeLost returns why the connection last dropped, or nil, and forgets
// it. (The handler runs on nats.go's callback goroutine and may come late:
// then the drop is reported without its reason.)
func (h *errHub) takeLost() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	err := h.lost
	h.lost = nil
	return err
}

func (h *errHub) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- err:
		default: // the call is not keeping up; it has errors enough
		}
	}
}

// listen returns a channel of asynchronous errors and a function to stop.
// A nil hub yields a nil channel, which never delivers.
func (h *errHub) listen() (<-chan error, func()) {
	if h == nil {
		return nil, func() {}
	}
	ch := make(chan error, 8)
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[chan error]struct{}{}
	}
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}

// deniedFor reports whether err is the broker refusing a publish on one of
// the call's subjects (isCall says which) or the subscription on its inbox.
func deniedFor(err error, isCall func(subject string) bool, inbox string) bool {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return false
	}
	msg := err.Error()
	if strings.Contains(msg, `Subscription to "`+inbox) {
		return true
	}
	_, subj, ok := strings.Cut(msg, `Publish to "`)
	if !ok {
		return false
	}
	subj, _, _ = strings.Cut(subj, `"`)
	return isCall(subj)
}
