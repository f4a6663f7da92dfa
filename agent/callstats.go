package agent

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/termsafe"
	"github.com/nats-io/nats.go/micro"
)

// callStats counts one micro endpoint's calls, as `nats micro stats
// cc-agent` shows them. The micro framework cannot: it counts a request
// when its handler returns, and the agent's handler returns as soon as a
// call has its goroutine (and answers broadcasts on a subject of its own,
// not through the framework's request), so micro saw near-zero times and
// no errors.
//
// A request is every call message the endpoint receives. It is settled
// once: answered (with a result or an error), or dropped unanswered. Its
// processing time runs from receipt to the answer's publication (or the
// drop), read from the agent's clock. An error is every request not
// answered with a result, except a re-sent copy of a call whose first
// copy answers it:
//   - an answered error: a refusal (400, 404, 413, 429, 503), a function's
//     error, a timeout (504), a result too large to send (413);
//   - a call dropped unanswered: a refusal past the caller's refusal
//     answers, a reply subject the agent may not answer on, a reply the
//     connection could not send;
//   - a slow-consumer report on the endpoint's subscription (calls the
//     client library dropped before the agent saw them), as micro counts.
type callStats struct {
	name, subject string
	now           func() time.Time

	mu        sync.Mutex
	requests  int
	errors    int
	lastError string
	busy      time.Duration
}

func newCallStats(name, subject string, now func() time.Time) *callStats {
	return &callStats{name: name, subject: subject, now: now}
}

// receipt is one received call, to be settled once.
type receipt struct {
	stats *callStats
	at    time.Time
	// callID is the call's id (fleet.HeaderCallID) and args the digest of
	// its arguments (fleet.ArgsDigest), echoed in its answer.
	callID, args string
}

// receive notes a call received now.
func (s *callStats) receive() receipt { return receipt{stats: s, at: s.now()} }

// settle counts the call as answered with a result (err nil) or a
// re-sent copy (err nil), or answered with, or dropped for, err.
func (r receipt) settle(err error) {
	took := r.stats.now().Sub(r.at)
	s := r.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	s.busy += max(took, 0)
	if err != nil {
		s.errors++
		s.lastError = statsError(err)
	}
}

// replyLost counts an answer that could not be sent for a call settle
// already counted (answered with an error when failed): an error, now
// the last one.
func (r receipt) replyLost(failed bool, err error) {
	s := r.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	if !failed {
		s.errors++
	}
	s.lastError = statsError(err)
}

// asyncError counts an error the endpoint's subscription reported (a slow
// consumer): not a request, as micro counts it.
func (s *callStats) asyncError(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errors++
	s.lastError = statsText(err.Error())
}

// snapshot is the endpoint's statistics in micro's schema.
func (s *callStats) snapshot() micro.EndpointStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := micro.EndpointStats{Name: s.name, Subject: s.subject, NumRequests: s.requests, NumErrors: s.errors,
		LastError: s.lastError, ProcessingTime: s.busy}
	if s.requests > 0 {
		st.AverageProcessingTime = s.busy / time.Duration(s.requests)
	}
	return st
}

// statsError is err as micro's last_error shows an error answered with
// micro.Request.Error, "code:description": the code and description the
// caller was answered, or would have been for a call dropped unanswered.
//
// Any admin reads it (`nats micro stats`), whoever's call it was, and a
// description may quote what a caller sent: so it is cut, like the
// audit's, to maxStatsError bytes, and escaped (internal/termsafe) so no
// caller's control or bidi characters reach an admin's terminal.
func statsError(err error) string {
	var d dropped
	if errors.As(err, &d) {
		code, desc := describe(d.err)
		return code + ":" + statsText(desc) + " (not answered: " + d.reason + ")"
	}
	code, desc := describe(err)
	return code + ":" + statsText(desc)
}

// maxStatsError bounds the description a last_error shows.
const maxStatsError = 200

// statsText is desc cut to maxStatsError bytes and made safe to print.
func statsText(desc string) string {
	if len(desc) > maxStatsError {
		desc = strings.ToValidUTF8(desc[:maxStatsError], "") + "…"
	}
	return termsafe.String(desc)
}

// describe is err as a reply's error headers carry it: its code
// (fleet.CodeOf) and its description, made to fit one header line.
func describe(err error) (code, desc string) {
	desc = err.Error()
	var fe *fleet.Error
	if errors.As(err, &fe) {
		desc = fe.Description
	}
	return strconv.Itoa(fleet.CodeOf(err)), headerSafe(desc)
}

// dropped is err, the refusal of a call dropped unanswered for reason.
type dropped struct {
	err    error
	reason string
}

func (d dropped) Error() string { return d.err.Error() + " (not answered: " + d.reason + ")" }
func (d dropped) Unwrap() error { return d.err }
