package broker

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLogViolationsBounded: a client sending nothing but refused
// publishes does not turn each into a log line: at most violationBurst a
// window, then one line counting the rest; other errors always pass.
func TestLogViolationsBounded(t *testing.T) {
	var out strings.Builder
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a := newLogAdapter(slog.New(slog.NewTextHandler(&out, nil)), func() time.Time { return at })
	for range 1000 {
		a.Errorf("%s - Publish Violation - Subject %q", "cid:7", "$SRV.PING")
	}
	a.Errorf("something else went wrong")
	if n := strings.Count(out.String(), "Publish Violation"); n != violationBurst {
		t.Fatalf("%d violation lines logged in one window, want %d", n, violationBurst)
	}
	if !strings.Contains(out.String(), "something else went wrong") {
		t.Fatal("another error was not logged")
	}
	at = at.Add(violationWindow)
	a.Errorf("%s - Subscription Violation - Subject %q, SID %s", "cid:7", "x", "1")
	if !strings.Contains(out.String(), "count=980") {
		t.Fatalf("the 980 left out were not counted:\n%s", out.String())
	}
	if n := strings.Count(out.String(), "Violation - Subject"); n != violationBurst+1 {
		t.Fatalf("%d violation lines, want %d (a new window logs again)", n, violationBurst+1)
	}
}
