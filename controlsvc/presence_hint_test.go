package controlsvc

import (
	"testing"
	"time"
)

// TestHintSchedule: the agents' hint goes out at once, when the window
// moves by more than a fifth, and every interval only while connections
// come (and once more after the last): a fleet at rest hears no repeat.
func TestHintSchedule(t *testing.T) {
	const iv = time.Minute
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := 10 * time.Second
	var h hintSched
	step := func(what string, now time.Time, w time.Duration, ver uint64, want bool) {
		t.Helper()
		got := h.due(now, w, ver, iv)
		if got != want {
			t.Fatalf("%s: due %v, want %v", what, got, want)
		}
		if got {
			h.sent(now, w, ver)
		}
	}
	step("first", t0, w, 1, true)
	step("within the interval", t0.Add(30*time.Second), w, 1, false)
	step("an interval on, nothing connected", t0.Add(iv), w, 1, false)
	step("connections came, an interval on", t0.Add(iv+time.Second), w, 2, true)
	at := t0.Add(iv + time.Second)
	step("more came: not within the interval", at.Add(30*time.Second), w, 3, false)
	step("an interval on", at.Add(iv), w, 3, true)
	step("once more for late subscribers", at.Add(2*iv), w, 3, true)
	step("at rest", at.Add(3*iv), w, 3, false)
	step("still at rest", at.Add(10*iv), w, 3, false)
	step("window moved by a fifth: not yet", at.Add(10*iv+time.Second), 12*time.Second, 3, false)
	step("window moved by more than a fifth: at once", at.Add(10*iv+2*time.Second), 12*time.Second+time.Millisecond, 3, true)
	step("window shrank by more than a fifth: at once", at.Add(10*iv+3*time.Second), 9*time.Second, 3, true)
	step("at rest after", at.Add(12*iv), 9*time.Second, 3, false)

	var fresh hintSched
	if !fresh.due(t0, w, 0, iv) {
		t.Fatal("a new publisher (zero schedule) does not hint at once")
	}
}
