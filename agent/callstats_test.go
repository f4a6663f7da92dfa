package agent

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// TestCallStats: each call counts once when settled, its processing time
// from receipt to settling on the agent's clock (overlapping calls each
// their own); every call not answered with a result is an error but a
// re-sent copy, and the last error reads "code:description" with what
// the caller was answered, or why it was not.
func TestCallStats(t *testing.T) {
	at := time.Date(2040, 1, 2, 3, 4, 5, 0, time.UTC)
	s := newCallStats("call", "sys.commandControl.fn.web01.*.*", func() time.Time { return at })
	advance := func(d time.Duration) { at = at.Add(d) }
	if st := s.snapshot(); st.NumRequests != 0 || st.ProcessingTime != 0 || st.AverageProcessingTime != 0 || st.LastError != "" {
		t.Fatalf("fresh stats: %+v", st)
	}

	// A slow call (3 s) overlaps a function error (1 s) and a refusal
	// answered at once.
	slow := s.receive()
	advance(time.Second)
	failing := s.receive()
	refused := s.receive()
	refused.settle(fleet.Errorf(fleet.CodeTooManyRequests, "operator U… is over its rate"))
	advance(time.Second)
	failing.settle(fleet.Errorf(fleet.CodeInternal, "disk on fire"))
	advance(time.Second)
	slow.settle(nil)

	st := s.snapshot()
	if st.Name != "call" || st.Subject != "sys.commandControl.fn.web01.*.*" {
		t.Errorf("endpoint: got %q %q", st.Name, st.Subject)
	}
	if st.NumRequests != 3 || st.NumErrors != 2 {
		t.Errorf("requests/errors: got %d/%d, want 3/2", st.NumRequests, st.NumErrors)
	}
	if want := 4 * time.Second; st.ProcessingTime != want {
		t.Errorf("processing time: got %s, want %s (3 s + 1 s + 0)", st.ProcessingTime, want)
	}
	if want := 4 * time.Second / 3; st.AverageProcessingTime != want {
		t.Errorf("average: got %s, want %s", st.AverageProcessingTime, want)
	}
	if st.LastError != "500:disk on fire" {
		t.Errorf("last error: got %q, want %q", st.LastError, "500:disk on fire")
	}

	// A re-sent copy is a request, no error; a refusal dropped
	// unanswered is an error that says so; a plain error is a 500.
	s.receive().settle(nil)
	advance(2 * time.Second) // between calls: no one's time
	r := s.receive()
	advance(500 * time.Millisecond)
	r.settle(dropped{fleet.Errorf(fleet.CodeUnavailable, "web01 is busy"), "the caller's refusal answers are used up"})
	st = s.snapshot()
	if st.NumRequests != 5 || st.NumErrors != 3 {
		t.Errorf("requests/errors: got %d/%d, want 5/3", st.NumRequests, st.NumErrors)
	}
	if want := 4500 * time.Millisecond; st.ProcessingTime != want || st.AverageProcessingTime != want/5 {
		t.Errorf("processing: got %s (average %s), want %s (%s)", st.ProcessingTime, st.AverageProcessingTime, want, want/5)
	}
	if want := "503:web01 is busy (not answered: the caller's refusal answers are used up)"; st.LastError != want {
		t.Errorf("last error: got %q, want %q", st.LastError, want)
	}
	s.receive().settle(errors.New("nats: connection closed"))
	if st := s.snapshot(); st.LastError != "500:nats: connection closed" || st.NumErrors != 4 {
		t.Errorf("plain error: got %q (%d errors)", st.LastError, st.NumErrors)
	}

	// A slow consumer is an error, not a request, as micro counts it.
	s.asyncError(errors.New("nats: slow consumer, messages dropped"))
	if st := s.snapshot(); st.NumRequests != 6 || st.NumErrors != 5 || !strings.Contains(st.LastError, "slow consumer") {
		t.Errorf("after a slow consumer: %+v", st)
	}

	// A description is cut to one header line, as the caller got it.
	s.receive().settle(fleet.Errorf(fleet.CodeInternal, "line one\nline two"))
	if st := s.snapshot(); st.LastError != "500:line one line two" {
		t.Errorf("last error: got %q", st.LastError)
	}

	// Any admin reads it: a caller's text is cut like the audit's and its
	// C1 and bidi controls are escaped before they reach a terminal.
	s.receive().settle(fleet.Errorf(fleet.CodeBadRequest, "%s", "bad \u009b31m \u202eevil"+strings.Repeat("x", 500)))
	st = s.snapshot()
	if strings.ContainsRune(st.LastError, '\u009b') || strings.ContainsRune(st.LastError, '\u202e') ||
		len(st.LastError) > len("400:")+maxStatsError*4+len("…") || !strings.HasPrefix(st.LastError, "400:bad ") {
		t.Errorf("a caller's text in last_error: got %q (%d bytes), want it cut and escaped", st.LastError, len(st.LastError))
	}
}

// TestCallStatsConcurrent: calls settled from many goroutines at once
// are each counted (run with -race).
func TestCallStatsConcurrent(t *testing.T) {
	frozen := time.Date(2040, 1, 2, 3, 4, 5, 0, time.UTC)
	s := newCallStats("broadcast", "sys.commandControl.all.*.*", func() time.Time { return frozen })
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			r := s.receive()
			if i%4 == 0 {
				r.settle(fleet.Errorf(fleet.CodeNotFound, "no function x"))
				return
			}
			r.settle(nil)
		})
	}
	wg.Wait()
	if st := s.snapshot(); st.NumRequests != 64 || st.NumErrors != 16 || st.ProcessingTime != 0 {
		t.Errorf("got %d requests, %d errors, %s; want 64, 16, 0s (the clock stood still)", st.NumRequests, st.NumErrors, st.ProcessingTime)
	}
}
