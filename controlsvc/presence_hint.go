package controlsvc

import (
	"context"
	"encoding/json"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// hintLoop tells the agents how to spread a reconnection (fleet.AgentHint):
// at once when the window moved by a fifth or more since the last hint,
// and every HintInterval for agents that connected since.
func (tr *presenceTracker) hintLoop(ctx context.Context) {
	t := time.NewTicker(min(2*time.Second, tr.hintInterval))
	defer t.Stop()
	var sent time.Duration
	var at time.Time
	var gen uint64
	for {
		online := tr.state.count()
		w := ReconnectWindow(online, tr.reconnectRate)
		if g := tr.leadGen.Load(); g != gen {
			// Just became the presence publisher: hint at once.
			gen, at = g, time.Time{}
		}
		// Only the presence publisher hints (leader.go).
		if moved := w - sent; tr.publishing() && (tr.clock().Sub(at) >= tr.hintInterval || moved > sent/5 || -moved > sent/5) {
			b, _ := json.Marshal(fleet.AgentHint{ReconnectWindowMS: w.Milliseconds(), Online: online})
			if tr.announce != nil && tr.announce.Publish(fleet.AgentHintSubject, b) == nil {
				sent, at = w, tr.clock()
				tr.hinted.Add(1)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ReconnectWindow is how long a fleet of online machines should spread its
// reconnection over for the callout to admit them at rate per second,
// with a quarter of headroom; at least half a second, at most ten minutes.
func ReconnectWindow(online int, rate float64) time.Duration {
	w := time.Duration(float64(online) / rate * 1.25 * float64(time.Second))
	return min(max(w, 500*time.Millisecond), 10*time.Minute)
}
