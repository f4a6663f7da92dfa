package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Status is the outcome of a call on one machine.
type Status string

// Statuses of a [Reply].
const (
	StatusOK         Status = "ok"          // the function answered a result
	StatusError      Status = "error"       // the function answered an error with a code
	StatusNoResponse Status = "no-response" // expected, but no answer before the deadline
)

// CallOptions tune a call. The zero value calls every ONLINE machine with a
// deadline of [DefaultTimeout].
type CallOptions struct {
	// Where selects the machines to call among those ONLINE.
	Where Selector
	// Machines, when not nil, are the machines to call, online or not,
	// instead of a selection from the presence snapshot; Where must then be
	// empty.
	Machines []string
	// Sessions, when not nil, makes the call one to sessions instead of
	// machines: the ONLINE sessions the query selects (all of them for an
	// empty query; see [Client.Sessions]), each called on its own
	// [fleet.SessionFnSubject]. Where and Machines must then be empty.
	// Replies name the session, its app and location.
	Sessions *fleet.SessionQuery
	// Timeout ends the call; partial results are results. Default
	// [DefaultTimeout].
	Timeout time.Duration
	// Published, when set, is called once the call is sent, with the number
	// of machines expected to answer (for a progress display).
	Published func(expected int)
}

// Reply is one machine's (or session's) answer to a call.
type Reply struct {
	Machine string `json:"machine,omitempty"`
	// Session is the session id, in a call to sessions; App and
	// Location are the session's, as the control service knows them.
	Session  string          `json:"session,omitempty"`
	App      string          `json:"app,omitempty"`
	Location *fleet.Location `json:"location,omitempty"`
	Status   Status          `json:"status"`
	// Unexpected is set when the machine was not among those expected.
	Unexpected bool `json:"unexpected,omitempty"`
	// Result is the JSON the function answered (StatusOK).
	Result json.RawMessage `json:"result,omitempty"`
	// Err is the function's error (StatusError).
	Err *fleet.Error `json:"error,omitempty"`
	// Duration is the time from publishing the call to this reply.
	Duration time.Duration `json:"-"`
}

// Target returns the machine id, or the session id in a call to sessions.
func (r *Reply) Target() string {
	if r.Session != "" {
		return r.Session
	}
	return r.Machine
}

// Summary counts a call's outcome.
type Summary struct {
	Function string
	// Expected is how many machines the call expected an answer from.
	Expected int
	// NumOK and NumError count the expected machines that answered.
	NumOK, NumError int
	// NumNotFound counts the errors among NumError with code
	// fleet.CodeNotFound: the machine serves no such function.
	NumNotFound int
	// NumUnexpected counts answers from machines not expected.
	NumUnexpected int
	// NoResponse lists the expected machines that did not answer, sorted.
	NoResponse []string
	// Duplicates counts further answers from a machine that had answered
	// (for example a machine with two live sessions).
	Duplicates int
	// Resent counts the copies of the call sent again to machines that had
	// not answered yet (see Stream).
	Resent int
	// Took is the time from publishing to the end of the call.
	Took time.Duration
	// TimedOut is set when the deadline, not the last answer, ended the call.
	TimedOut bool
	// NotCalled lists the machines selected but not called, in a call
	// made in batches that stopped early ([Client.CallBatches]).
	NotCalled []string
}

// AllOK reports whether every expected machine answered a result.
func (s *Summary) AllOK() bool { return s.NumOK == s.Expected }

// AllNotFound reports whether machines were expected and every one of
// them answered that it serves no such function (fleet.CodeNotFound):
// the function's name is wrong, or nothing selected serves it.
func (s *Summary) AllNotFound() bool { return s.Expected > 0 && s.NumNotFound == s.Expected }

// String returns e.g. "3 expected: 2 ok, 1 error, 0 no response".
func (s *Summary) String() string {
	out := fmt.Sprintf("%d expected: %d ok, %d error, %d no response",
		s.Expected, s.NumOK, s.NumError, len(s.NoResponse))
	if s.NumUnexpected > 0 {
		out += fmt.Sprintf(", %d unexpected", s.NumUnexpected)
	}
	if len(s.NotCalled) > 0 {
		out += fmt.Sprintf(", %d not called", len(s.NotCalled))
	}
	return out
}

// ErrNoMatch is returned, with an empty summary (Expected 0), by a call
// whose selection chose nobody: no ONLINE machine matches its selector
// (or none is ONLINE), or no ONLINE session its session query. Nothing
// was called. The error names the selection; test with errors.Is.
var ErrNoMatch = errors.New("no ONLINE machine or session matches")

// noMatchError is ErrNoMatch naming what was selected.
type noMatchError struct {
	what string // "machine" or "session"
	sel  string // the selection as written; "" for everything
	hint string // why (Selector.NoMatchHint), "" when not known
}

func (e *noMatchError) Error() string {
	if e.sel == "" {
		return "no " + e.what + " is ONLINE"
	}
	s := "no ONLINE " + e.what + " matches " + e.sel
	if e.hint != "" {
		s += ": " + e.hint
	}
	return s
}

func (e *noMatchError) Is(target error) bool { return target == ErrNoMatch }

// noMatch is the error of a call opts selects nobody for; hint says why
// (Selector.NoMatchHint of the snapshot), "" when not known.
func noMatch(opts CallOptions, hint string) error {
	if q := opts.Sessions; q != nil {
		var parts []string
		keys := make([]string, 0, len(q.Where))
		for k := range q.Where {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			parts = append(parts, k+"="+q.Where[k])
		}
		return &noMatchError{what: "session", sel: strings.Join(parts, ",")}
	}
	return &noMatchError{what: "machine", sel: opts.Where.String(), hint: hint}
}

// Results are a call's three sets and its summary.
type Results struct {
	Summary
	// Replied holds the answers of the expected machines, in arrival order.
	Replied []Reply
	// Unexpected holds the answers of machines that were not expected.
	Unexpected []Reply
}

// Call calls function fn with args (nil for none) on the machines opts
// selects and collects every answer; see [Client.Stream] for how the call
// runs and ends. When ctx ends first, Call returns the partial results and
// ctx.Err(); when the selection chooses nobody, the empty results and an
// error wrapping [ErrNoMatch].
func (c *Client) Call(ctx context.Context, fn string, args map[string]any, opts CallOptions) (*Results, error) {
	res := &Results{}
	sum, err := c.Stream(ctx, fn, args, opts, func(r Reply) {
		if r.Unexpected {
			res.Unexpected = append(res.Unexpected, r)
		} else if r.Status != StatusNoResponse {
			res.Replied = append(res.Replied, r)
		}
	})
	if sum == nil {
		return nil, err
	}
	res.Summary = *sum
	return res, err
}

// Stream calls function fn with args (nil for none) on the machines opts
// selects and hands each answer to each as it arrives, on Stream's
// goroutine, then one [StatusNoResponse] reply per expected machine that did
// not answer. It keeps no answer itself.
//
// The expected machines are opts.Machines, or the presence snapshot filtered
// by opts.Where. When that is every machine online the call is one publish on
// [fleet.AllSubject], otherwise one [fleet.FnSubject] publish per machine.
// Every copy carries one call id ([fleet.HeaderCallID]). A machine that has
// not answered when replies pause is sent the call again on its own
// subject (after a quarter of the timeout, at most 250 ms, and once more a
// second later; never in the last quarter of the timeout), and an agent
// runs a call id at most once: a machine that was ONLINE but not yet
// reachable when the call went out (its subscriptions still on their way
// after a reconnect or a move between brokers) still answers, and an
// agent of this version does not run the call twice.
// The call ends the moment every expected machine has answered (or was
// twice reported to have no subscriber: by the broker, or by the control
// service for a machine it knows is offline), or at the deadline. A machine that
// answers but was not expected (it came online after the snapshot) is
// reported with Unexpected set, until the call ends.
//
// A call to sessions ([CallOptions.Sessions]) runs the same way, but for
// the broadcast: each session selected is sent its own copy on
// [fleet.SessionFnSubject], answers under its session id, and an answer
// from a session not selected is ignored (no session can join a call it
// was not sent).
//
// When ctx ends first, Stream returns the summary so far and ctx.Err().
// When the selection chooses nobody, it returns the empty summary and an
// error wrapping [ErrNoMatch], having called no one.
func (c *Client) Stream(ctx context.Context, fn string, args map[string]any, opts CallOptions, each func(Reply)) (*Summary, error) {
	if err := fleet.ValidateName("function name", fn); err != nil {
		return nil, err
	}
	body := []byte("{}")
	if len(args) > 0 {
		var err error
		if body, err = json.Marshal(args); err != nil {
			return nil, fmt.Errorf("call %s: encode arguments: %w", fn, err)
		}
	}
	var (
		targets   []string
		sessions  []fleet.Session
		broadcast bool
		hint      string // why a selection chose nobody
		err       error
	)
	if opts.Sessions != nil {
		targets, sessions, err = c.sessionTargets(ctx, opts)
	} else {
		targets, broadcast, hint, err = c.targets(ctx, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("call %s: %w", fn, err)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	cl := newCollector(fn, targets, each)
	if opts.Sessions != nil {
		cl.sessions = append([]fleet.Session{}, sessions...) // never nil: a call to sessions
	}
	if len(targets) == 0 {
		if opts.Published != nil {
			opts.Published(0)
		}
		return cl.summary(), fmt.Errorf("call %s: %w", fn, noMatch(opts, hint))
	}
	return c.run(ctx, cl, fn, body, broadcast, timeout, opts.Published)
}

// targets returns the machines a call expects, sorted, and whether they are
// every machine online.
func (c *Client) targets(ctx context.Context, opts CallOptions) ([]string, bool, string, error) {
	if opts.Machines != nil {
		if !opts.Where.Empty() {
			return nil, false, "", fmt.Errorf("give either machines or a selector, not both")
		}
		seen := make(map[string]bool, len(opts.Machines))
		var ids []string
		for _, id := range opts.Machines {
			if err := fleet.ValidateMachineID(id); err != nil {
				return nil, false, "", err
			}
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		return ids, false, "", nil
	}
	if opts.Where.Empty() {
		// Every ONLINE machine: their ids alone will do.
		ids, err := c.onlineIDs(ctx)
		if err != nil {
			return nil, false, "", err
		}
		return ids, true, "", nil
	}
	snap, err := c.Snapshot(ctx)
	if err != nil {
		return nil, false, "", err
	}
	sel := opts.Where.Filter(snap.Servers)
	ids := make([]string, len(sel))
	for i, s := range sel {
		ids[i] = s.Machine
	}
	hint := ""
	if len(ids) == 0 && len(snap.Servers) > 0 {
		hint = opts.Where.KeyHint(snap.Servers)
	}
	return ids, len(ids) == len(snap.Servers), hint, nil
}

// sessionTargets returns the sessions a call to sessions expects, sorted
// by id, with what the control service knows of each.
func (c *Client) sessionTargets(ctx context.Context, opts CallOptions) ([]string, []fleet.Session, error) {
	if opts.Machines != nil || !opts.Where.Empty() {
		return nil, nil, fmt.Errorf("a call to sessions selects them with its session query: give no machines nor machine selector")
	}
	sessions, err := c.Sessions(ctx, *opts.Sessions)
	if err != nil {
		return nil, nil, err
	}
	ids := make([]string, len(sessions))
	for i, s := range sessions {
		ids[i] = s.ID
	}
	return ids, sessions, nil
}
