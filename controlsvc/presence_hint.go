package controlsvc

import (
	"context"
	"encoding/json"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// hintLoop tells the agents how to spread a reconnection (fleet.AgentHint):
// at once when the window moved by a fifth or more since the last hint,
// and every HintInterval while connections come: an agent that connected
// since the last hint has not heard it. A fleet where nothing connects
// hears no repeat — one message to every agent a minute was a tenth of
// the broker's writes at rest (issue 17).
func (tr *presenceTracker) hintLoop(ctx context.Context) {
	t := time.NewTicker(min(2*time.Second, tr.hintInterval))
	defer t.Stop()
	var h hintSched
	var gen uint64
	for {
		online := tr.state.count()
		w := ReconnectWindow(online, tr.reconnectRate)
		if g := tr.leadGen.Load(); g != gen {
			// Just became the presence publisher: hint at once.
			gen, h = g, hintSched{}
		}
		now, ver := tr.clock(), tr.state.version()
		// Only the presence publisher hints (leader.go).
		if tr.publishing() && h.due(now, w, ver, tr.hintInterval) {
			b, _ := json.Marshal(fleet.AgentHint{ReconnectWindowMS: w.Milliseconds(), Online: online})
			if tr.announce != nil && tr.announce.Publish(fleet.AgentHintSubject, b) == nil {
				h.sent(now, w, ver)
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

// hintSched decides when the agents' hint goes out. Its zero value hints
// at once.
type hintSched struct {
	done   bool          // a hint went out
	at     time.Time     // when
	window time.Duration // with this window
	ver    uint64        // the presence version (presence.version) read before it
	again  bool          // repeat it once more even if nothing changes
}

// due reports whether a hint is due at now, the window being w and the
// presence version ver: the first one; one whose window moved by more
// than a fifth; or, every interval, one after connections came. A
// connection counted in ver may subscribe to the hint only after the
// hint that followed it went out, so a hint sent because ver changed is
// repeated once more an interval later.
func (h *hintSched) due(now time.Time, w time.Duration, ver uint64, interval time.Duration) bool {
	if !h.done {
		return true
	}
	if moved := w - h.window; moved > h.window/5 || -moved > h.window/5 {
		return true
	}
	return now.Sub(h.at) >= interval && (ver != h.ver || h.again)
}

// sent records a hint with window w that went out at now, ver having been
// read before it.
func (h *hintSched) sent(now time.Time, w time.Duration, ver uint64) {
	h.again = h.done && ver != h.ver
	h.done, h.at, h.window, h.ver = true, now, w, ver
}

// ReconnectWindow is how long a fleet of online machines should spread its
// reconnection over for the callout to admit them at rate per second,
// with a quarter of headroom; at least half a second, at most ten minutes.
func ReconnectWindow(online int, rate float64) time.Duration {
	w := time.Duration(float64(online) / rate * 1.25 * float64(time.Second))
	return min(max(w, 500*time.Millisecond), 10*time.Minute)
}
