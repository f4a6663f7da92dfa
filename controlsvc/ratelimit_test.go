package controlsvc

import (
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// TestOperatorLimitTokenBucket: each operator key has its own bucket: the
// burst is let through at once, then requests are refused 429 with a
// message naming the limit, the flags that set it and when to retry, and
// the rate refills it; another key is not affected. Refusals are
// answered up to the burst (refilled at the rate), then dropped; they are
// logged once, then at most every limitLogEvery with the count since.
func TestOperatorLimitTokenBucket(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	l := newOpLimiter("presence snapshot", "snapshot", 10, 3, func() time.Time { return at })
	for i := range 3 {
		if r := l.allow("UVIEWER"); r != nil {
			t.Fatalf("request %d of the burst refused: %v", i+1, r.Err)
		}
	}
	r := l.allow("UVIEWER")
	if r == nil {
		t.Fatal("a request past the burst was let through")
	}
	err := r.Err
	if err.Code != fleet.CodeTooManyRequests {
		t.Errorf("code %d, want %d", err.Code, fleet.CodeTooManyRequests)
	}
	for _, want := range []string{"presence snapshot limit", "10 per second", "bursts of 3", "--snapshot-rate", "--snapshot-burst", "retry in 100ms"} {
		if !strings.Contains(err.Description, want) {
			t.Errorf("refusal %q does not say %q", err.Description, want)
		}
	}
	if !r.Log || r.Count != 1 || !r.Answer {
		t.Errorf("first refusal: log %v count %d answer %v, want logged with count 1 and answered", r.Log, r.Count, r.Answer)
	}
	if r := l.allow("UADMIN"); r != nil {
		t.Fatalf("another operator refused by the first one's flood: %v", r.Err)
	}
	// Refusals are answered up to the burst too, then dropped: a flood
	// costs a lookup per request, not a reply.
	for i := range 5 {
		r := l.allow("UVIEWER")
		if r == nil || r.Log {
			t.Fatalf("refusal %d: %+v, want refused and not logged again within limitLogEvery", i+2, r)
		}
		if want := i < 2; r.Answer != want || (r.Err != nil) != want {
			t.Fatalf("refusal %d: answered %v, want %v (3 answered refusals)", i+2, r.Answer, want)
		}
	}
	at = at.Add(250 * time.Millisecond) // 2.5 tokens
	for i := range 2 {
		if r := l.allow("UVIEWER"); r != nil {
			t.Fatalf("refilled request %d refused: %v", i+1, r.Err)
		}
	}
	if r := l.allow("UVIEWER"); r == nil || !r.Answer {
		t.Fatalf("past the refill: %+v, want refused and answered (the answers refilled too)", r)
	}
	at = at.Add(limitLogEvery)
	for range 100 {
		l.allow("UVIEWER")
	}
	// 10 s refilled the bucket to its burst (3); the rest were refused,
	// the first of them logged with the count since the last log line.
	if l.buckets["UVIEWER"].refused != 96 {
		t.Errorf("refusals since the log line: %d, want 96", l.buckets["UVIEWER"].refused)
	}
}

// TestOperatorLimitOff: a negative rate is no limit at all.
func TestOperatorLimitOff(t *testing.T) {
	l := newOpLimiter("control API", "control", -1, 1, time.Now)
	for range 1000 {
		if r := l.allow("UADMIN"); r != nil {
			t.Fatal(r.Err)
		}
	}
}

// TestOperatorLimitCostsParts: a snapshot of several parts costs one
// token per part (at most the burst, so a snapshot larger than the burst
// is still possible with a full bucket), and the retry time counts what
// is missing.
func TestOperatorLimitCostsParts(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	l := newOpLimiter("presence snapshot", "snapshot", 2, 5, func() time.Time { return at })
	if r := l.allowN("UVIEWER", 3); r != nil {
		t.Fatalf("first 3-part snapshot refused: %v", r.Err)
	}
	r := l.allowN("UVIEWER", 3)
	if r == nil {
		t.Fatal("second 3-part snapshot let through with 2 tokens left")
	}
	if !strings.Contains(r.Err.Description, "retry in 500ms") {
		t.Errorf("refusal %q: want retry in 500ms (1 token missing at 2/s)", r.Err.Description)
	}
	at = at.Add(time.Hour)
	if r := l.allowN("UVIEWER", 30); r != nil {
		t.Fatalf("a 30-part snapshot with a full bucket of 5 refused: %v", r.Err)
	}
	if r := l.allowN("UVIEWER", 1); r == nil {
		t.Fatal("the 30-part snapshot did not empty the bucket")
	}
}

// TestOperatorLimitCharge: a request that cost more than it paid (a
// history page that read many entries) is charged after: the bucket goes
// into debt, at most the burst deep, and the operator's next request
// waits until it has refilled, told how long; another key is not
// charged.
func TestOperatorLimitCharge(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	l := newOpLimiter("control API", "control", 10, 5, func() time.Time { return at })
	if r := l.allow("UVIEWER"); r != nil {
		t.Fatal(r.Err)
	}
	l.charge("UVIEWER", 1000) // 4 left, charged 1,000: down to -5
	r := l.allow("UVIEWER")
	if r == nil || !strings.Contains(r.Err.Description, "retry in 600ms") {
		t.Fatalf("after a charge past the burst: %+v, want refused, retry in 600ms (from -5 to 1 at 10/s)", r)
	}
	at = at.Add(600 * time.Millisecond)
	if r := l.allow("UVIEWER"); r != nil {
		t.Fatalf("refilled: %v", r.Err)
	}
	if r := l.allow("UADMIN"); r != nil {
		t.Fatalf("another key charged: %v", r.Err)
	}
	l.charge("UADMIN", 0)
	var none *opLimiter
	none.charge("UVIEWER", 5) // no limit: nothing to charge
}
