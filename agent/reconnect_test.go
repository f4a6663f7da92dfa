package agent

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// TestReconnectDelay: the first attempt falls anywhere in the fleet's
// window (half a second without a hint); later ones back off with jitter
// up to the larger of the cap and the window.
func TestReconnectDelay(t *testing.T) {
	for _, tt := range []struct {
		window, maxDelay time.Duration
	}{{0, 5 * time.Second}, {12 * time.Second, 5 * time.Second}, {2 * time.Second, 5 * time.Second}} {
		var lo, hi time.Duration = 1 << 62, 0
		firstMax := max(tt.window, 500*time.Millisecond)
		for range 2000 {
			d := reconnectDelay(1, tt.maxDelay, tt.window)
			if d < 0 || d > firstMax {
				t.Fatalf("window %s: first delay %s outside [0, %s]", tt.window, d, firstMax)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		// Spread over the window, not bunched at one end.
		if lo > firstMax/10 || hi < firstMax*9/10 {
			t.Errorf("window %s: first delays span only [%s, %s]", tt.window, lo, hi)
		}
		limit := max(tt.maxDelay, tt.window)
		for n := 2; n < 40; n++ {
			d := reconnectDelay(n, tt.maxDelay, tt.window)
			full := min(time.Duration(250<<min(n, 10))*time.Millisecond, limit)
			if d < full/2 || d > full {
				t.Fatalf("window %s attempt %d: %s outside [%s, %s]", tt.window, n, d, full/2, full)
			}
		}
	}
}

// TestExpiryIsNotARefusal: credentials expire routinely (cc-control
// --user-ttl, --site-user-ttl) and the agent authorises again. That is no
// refusal, and it must not use up the 30-second allowance of the
// refusal message: a machine removed meanwhile is refused right after,
// and that refusal, with what to do, is logged.
func TestExpiryIsNotARefusal(t *testing.T) {
	var log bytes.Buffer
	kp, _ := nkeys.CreateUser()
	at := time.Date(2040, 1, 2, 3, 4, 5, 0, time.UTC)
	a, err := New(Config{Key: kp, MachineID: "10.0.0.5_web01", Now: func() time.Time { return at },
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	a.connectError(nats.ErrAuthExpired, nil, true)
	if log.Len() != 0 {
		t.Errorf("an expiry was logged as a problem: %s", log.String())
	}
	a.connectError(nats.ErrAuthorization, nil, true)
	if !strings.Contains(log.String(), "the broker refused this machine") {
		t.Errorf("the refusal after an expiry was not logged: %q", log.String())
	}
}
