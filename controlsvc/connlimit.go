package controlsvc

import (
	"fmt"
	"sync"
	"time"
)

// DefaultMaxAgentConnections is how many connections one machine's key
// may hold at once, counting those authorised but not yet seen connected.
// A machine needs one (the newest wins, see supersede); a few more let a
// reconnect overlap its old, half-open socket.
const DefaultMaxAgentConnections = 4

// admitWindow is how long an authorised connection counts as in flight
// before its connect event arrives (longer than the broker's auth
// timeout: a grant older than that was used or abandoned).
const admitWindow = 5 * time.Second

// connLimiter bounds the connections one machine identity may hold: those
// presence knows plus those the callout authorised in the last
// admitWindow and not yet seen connected. Without it one key opened 8,000
// connections in 4.8 s; with it a burst gets max, and the newest-wins
// rule then closes all but one.
type connLimiter struct {
	max  int
	now  func() time.Time
	live func(id string) int

	mu       sync.Mutex
	inFlight map[string][]time.Time
}

func newConnLimiter(max int, now func() time.Time, live func(id string) int) *connLimiter {
	return &connLimiter{max: max, now: now, live: live, inFlight: map[string][]time.Time{}}
}

// admit counts one more connection for machine id, or says why not.
func (l *connLimiter) admit(id string) error {
	if l == nil || l.max <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	grants := l.inFlight[id]
	for len(grants) > 0 && now.Sub(grants[0]) > admitWindow {
		grants = grants[1:]
	}
	if n := l.live(id) + len(grants); n >= l.max {
		if len(grants) == 0 {
			delete(l.inFlight, id)
		} else {
			l.inFlight[id] = grants
		}
		return fmt.Errorf("machine %s already has %d connections, the most one machine may hold (cc-control --max-agent-connections): "+
			"a machine needs one; if this repeats, another process is using this machine's key", id, n)
	}
	l.inFlight[id] = append(grants, now)
	return nil
}

// connected marks one of machine id's authorised connections as seen
// connected: presence counts it from now on.
func (l *connLimiter) connected(id string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if g := l.inFlight[id]; len(g) > 1 {
		l.inFlight[id] = g[1:]
	} else {
		delete(l.inFlight, id)
	}
}

// machineConns is how many connections presence holds for machine id.
func (p *presence) machineConns(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := p.machines[id]; m != nil {
		return len(m.conns)
	}
	return 0
}
