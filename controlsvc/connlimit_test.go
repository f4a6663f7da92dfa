package controlsvc

import (
	"strings"
	"testing"
	"time"
)

// TestConnLimiter: grants count until their connect event is seen or
// admitWindow passes; live connections count as presence reports them.
func TestConnLimiter(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	live := map[string]int{}
	l := newConnLimiter(2, func() time.Time { return now }, func(id string) int { return live[id] })
	for i := range 2 {
		if err := l.admit("m"); err != nil {
			t.Fatalf("grant %d refused: %v", i+1, err)
		}
	}
	err := l.admit("m")
	if err == nil || !strings.Contains(err.Error(), "machine m already has 2 connections") {
		t.Fatalf("third grant in flight: got %v", err)
	}
	if l.admit("other") != nil {
		t.Fatal("another machine was refused")
	}
	// One connects: it now counts through presence instead.
	l.connected("m")
	live["m"] = 1
	if l.admit("m") == nil {
		t.Fatal("one live and one in flight: a third was let in")
	}
	// The grant still in flight expires.
	now = now.Add(admitWindow + time.Second)
	if err := l.admit("m"); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	live["m"] = 2
	l.connected("m")
	if l.admit("m") == nil {
		t.Fatal("two live: a third was let in")
	}
	var off *connLimiter
	if off.admit("m") != nil {
		t.Fatal("a nil limiter refused")
	}
}
