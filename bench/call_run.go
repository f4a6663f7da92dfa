package bench

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Target states in a collector. The first three are still waiting.
const (
	pending           uint8 = iota
	unreachable             // "no responders" once; kept for a re-send
	unreachableResent       // and re-sent since: the next "no responders" is final
	answered                // replied, ok or error
	noResponder             // the broker said nobody subscribes to its subject
)

// waiting reports whether a target in state st has not been accounted for.
func waiting(st uint8) bool { return st < answered }

// collector tracks one call: who is expected, who answered, the counts.
type collector struct {
	targets    []string       // sorted
	tokens     []string       // targets' subject tokens
	byToken    map[string]int // token → position in targets
	state      []uint8
	remaining  int
	handled    int // messages handled: re-sends wait while it grows
	unexpected map[string]bool
	sum        Summary
	each       func(Reply)
	start      time.Time
	// sessions, in a call to sessions, are the targets' sessions (same
	// order); nil in a call to machines.
	sessions []fleet.Session
}

// toSessions reports whether the call is one to sessions.
func (cl *collector) toSessions() bool { return cl.sessions != nil }

// subject is the subject of the call to target i.
func (cl *collector) subject(i int, fn, caller string) string {
	if cl.toSessions() {
		return fleet.SessionFnSubject(cl.targets[i], fn, caller)
	}
	return fleet.FnSubject(cl.targets[i], fn, caller)
}

// name sets who r is from: target i's machine id, or its session id,
// app and location.
func (cl *collector) name(r *Reply, i int) {
	if !cl.toSessions() {
		r.Machine = cl.targets[i]
		return
	}
	s := &cl.sessions[i]
	r.Session, r.App, r.Location = s.ID, s.App, s.Location
}

func newCollector(fn string, targets []string, each func(Reply)) *collector {
	cl := &collector{
		targets:    targets,
		tokens:     machineTokens(targets),
		byToken:    make(map[string]int, len(targets)),
		state:      make([]uint8, len(targets)),
		remaining:  len(targets),
		unexpected: map[string]bool{},
		each:       each,
		start:      time.Now(),
	}
	for i, tok := range cl.tokens {
		cl.byToken[tok] = i
	}
	cl.sum.Function, cl.sum.Expected = fn, len(targets)
	return cl
}

// machineTokens returns the subject token of each machine, all slices of
// one string: a 50,000-machine call makes one allocation for them, not
// one each.
func machineTokens(ids []string) []string {
	n := 0
	for _, id := range ids {
		n += len(id)
	}
	buf := make([]byte, 0, n)
	for _, id := range ids {
		for j := 0; j < len(id); j++ {
			c := id[j]
			if c == '.' {
				c = '~'
			}
			buf = append(buf, c)
		}
	}
	all, out, off := string(buf), make([]string, len(ids)), 0
	for i, id := range ids {
		out[i] = all[off : off+len(id)]
		off += len(id)
	}
	return out
}

// isNoResponders reports whether msg is the broker's "no responders" status.
func isNoResponders(msg *nats.Msg) bool {
	return len(msg.Data) == 0 && msg.Header != nil && fleet.IsNoResponders(msg.Header.Get(fleet.HeaderStatus), len(msg.Data))
}

// handle records one message that arrived on the call's inbox; target is
// the position of the machine its reply subject names, -1 for the
// broadcast's own reply subject, -2 for a machine not targeted.
func (cl *collector) handle(msg *nats.Msg, target int) {
	if isNoResponders(msg) {
		// Nobody subscribed at that moment. An agent that has just
		// (re)connected may not have its subscriptions in yet, or not yet
		// across a cluster's routes, so the first such answer keeps the
		// machine pending for a re-send. One answering a copy sent after
		// that is final; one answering an earlier copy (they come in
		// order) changes nothing.
		if target == -2 {
			return
		}
		for i, st := range cl.state {
			if target >= 0 && i != target {
				continue
			}
			switch st {
			case pending:
				cl.state[i] = unreachable
			case unreachableResent:
				cl.state[i] = noResponder
				cl.remaining--
			}
		}
		return
	}
	if target == -1 {
		return // only a status comes on a broadcast's own reply subject
	}
	if target == -2 && cl.toSessions() {
		// A call to sessions goes to each on its own subject; an answer
		// under another session's token answers nothing this call sent.
		return
	}
	if fn := msg.Header.Get(fleet.HeaderFunction); fn != cl.sum.Function && !(fn == "" && cl.toSessions()) {
		// Not this call's answer: the subject proves which machine sent
		// it, this header that the machine's agent sent it as the answer
		// to this function (a micro discovery reply aimed here, say,
		// carries none). It neither counts nor shadows the real answer.
		return
	}
	cl.handled++
	r := Reply{Duration: time.Since(cl.start)}
	if target >= 0 {
		cl.name(&r, target)
	} else {
		rs, err := fleet.ParseCallReply(msg.Subject)
		if err != nil {
			return
		}
		if r.Machine, err = fleet.MachineFromToken(rs.Target); err != nil {
			return
		}
	}
	if fe := replyError(msg); fe != nil {
		r.Status, r.Err = StatusError, fe
	} else if len(msg.Data) == 0 {
		r.Status, r.Result = StatusOK, json.RawMessage("null")
	} else if validJSON(msg.Data) {
		r.Status, r.Result = StatusOK, json.RawMessage(msg.Data)
	} else {
		r.Status, r.Err = StatusError, fleet.Errorf(fleet.CodeInternal, "the reply is not JSON: %.60q", msg.Data)
	}
	i, ok := target, target >= 0
	switch {
	case !ok && cl.unexpected[r.Machine], ok && cl.state[i] == answered:
		cl.sum.Duplicates++
		return
	case !ok:
		cl.unexpected[r.Machine] = true
		r.Unexpected = true
		cl.sum.NumUnexpected++
	default:
		if waiting(cl.state[i]) {
			cl.remaining--
		}
		cl.state[i] = answered
		if r.Status == StatusOK {
			cl.sum.NumOK++
		} else {
			cl.sum.NumError++
			if r.Err != nil && r.Err.Code == fleet.CodeNotFound {
				cl.sum.NumNotFound++
			}
		}
	}
	cl.each(r)
}

// summary reports the expected machines that did not answer and returns
// the summary.
func (cl *collector) summary() *Summary {
	cl.sum.Took = time.Since(cl.start)
	for i, st := range cl.state {
		if st == answered {
			continue
		}
		r := Reply{Status: StatusNoResponse, Duration: cl.sum.Took}
		cl.name(&r, i)
		switch {
		case st == pending:
		case cl.toSessions():
			r.Err = fleet.Errorf(fleet.CodeUnavailable, "the session is not listening (it left, or its app does not let it expose this function)")
		default:
			r.Err = fleet.Errorf(fleet.CodeUnavailable, "no agent is listening (offline?)")
		}
		cl.sum.NoResponse = append(cl.sum.NoResponse, cl.targets[i])
		cl.each(r)
	}
	sort.Strings(cl.sum.NoResponse)
	return &cl.sum
}

// run publishes the call and collects replies until every target is
// accounted for, the deadline passes or ctx ends.
func (c *Client) run(ctx context.Context, cl *collector, fn string, body []byte, broadcast bool, timeout time.Duration, published func(int)) (*Summary, error) {
	if c.key == "" {
		return nil, fmt.Errorf("call %s: %w: a call's replies come back to the caller's own inbox, named by its key", fn, ErrNoKey)
	}
	// Random, not the process's NUID sequence, which nats.go's request
	// inboxes also draw from: agents see call ids, and must learn
	// nothing from them about this client's other inboxes.
	callID := rand.Text()
	msgs := make(chan *nats.Msg, len(cl.targets)+4096)
	sub, err := c.nc.ChanSubscribe(fleet.CallReplies(c.key, callID), msgs)
	if err != nil {
		return nil, fmt.Errorf("call %s: subscribe to replies: %w", fn, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	asyncErrs, stop := c.errs.listen()
	defer stop()

	cl.start = time.Now()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	deadline := cl.start.Add(timeout)
	if err := c.publish(cl, fn, body, callID, broadcast); err != nil {
		return nil, err
	}
	if published != nil {
		published(len(cl.targets))
	}
	retry := time.NewTimer(firstResend(timeout, len(cl.targets)))
	defer retry.Stop()
	seen := 0 // cl.handled when the re-send timer last fired
	resends := 0
	isCall := func(subject string) bool {
		call, err := fleet.ParseFnSubject(subject)
		return err == nil && call.Function == fn && call.Caller == c.key && (call.Token == "") == broadcast
	}
	denied := "does your operator role allow " + fn + "?"
	if cl.toSessions() {
		isCall = func(subject string) bool {
			call, err := fleet.ParseSessionFnSubject(subject)
			return err == nil && call.Function == fn && call.Caller == c.key
		}
		denied = "calling sessions needs an admin, or a viewer added with --sessions"
	}
	for cl.remaining > 0 {
		select {
		case msg := <-msgs:
			cl.handle(msg, cl.replyTarget(msg.Subject))
		case err := <-asyncErrs:
			if deniedFor(err, isCall, fleet.CallReplies(c.key, callID)) {
				return cl.summary(), fleet.Errorf(fleet.CodeForbidden, "the broker denied this call (%v): %s", err, denied)
			}
		case <-retry.C:
			if cl.handled != seen {
				// Replies are still coming in: the rest are likely
				// queued, not lost. Look again once they pause.
				seen = cl.handled
				retry.Reset(quietFor(len(cl.targets)))
				continue
			}
			if time.Until(deadline) < timeout/4 {
				// Too late: a copy that runs now would likely answer
				// after the caller stopped listening.
				continue
			}
			resends++
			if err := c.resend(cl, fn, body, callID, resends); err != nil {
				return cl.drain(msgs), err
			}
			if resends < maxResends {
				retry.Reset(resendEvery)
			}
		case <-timer.C:
			cl.sum.TimedOut = true
			return cl.drain(msgs), nil
		case <-ctx.Done():
			return cl.drain(msgs), ctx.Err()
		}
	}
	return cl.drain(msgs), nil
}

// drain handles the replies already received, then summarises.
func (cl *collector) drain(msgs chan *nats.Msg) *Summary {
	for {
		select {
		case msg := <-msgs:
			cl.handle(msg, cl.replyTarget(msg.Subject))
		default:
			return cl.summary()
		}
	}
}

// Re-sends: a machine that has not answered is sent the call again, on its
// own subject, with the same call id (an agent runs an id at most once).
// This closes the window in which a machine is ONLINE but its subscriptions
// have not reached the broker the caller is on yet (just after it
// connected, or moved to another broker of a cluster), where the first
// copy finds nobody. The first re-send comes after firstResend, the
// second resendEvery later, none in the last quarter of the timeout, and
// only once no reply has arrived for resendQuiet, so a busy fleet whose
// answers are still streaming in is not sent more work. Both waits grow
// with the number of targets (resendPerTarget each): on two cores a
// 10,000-machine broadcast took 100–450 ms to bring its first answer and
// paused as long between answers, and a re-send to every machine then
// doubled the work of nearly every call. A machine that is merely slow
// gets at most maxResends small copies it ignores.
const (
	resendEvery     = time.Second
	resendQuiet     = 100 * time.Millisecond
	resendPerTarget = 25 * time.Microsecond
	maxResends      = 2
)

// quietFor is how long replies must pause before machines that have not
// answered are sent the call again.
func quietFor(targets int) time.Duration {
	return resendQuiet + time.Duration(targets)*resendPerTarget
}

// resendFirstMax bounds the delay before the first re-send (a variable
// so a test can widen it).
var resendFirstMax = 250 * time.Millisecond

func firstResend(timeout time.Duration, targets int) time.Duration {
	return min(timeout/4, resendFirstMax+time.Duration(targets)*resendPerTarget)
}

// callMsg is the call's request to subject with its reply subject and id.
func callMsg(subject, reply, callID string, body []byte) *nats.Msg {
	m := &nats.Msg{Subject: subject, Reply: reply, Data: body, Header: nats.Header{}}
	m.Header.Set(fleet.HeaderCallID, callID)
	return m
}

func (c *Client) publish(cl *collector, fn string, body []byte, callID string, broadcast bool) error {
	if broadcast {
		if err := c.nc.PublishMsg(callMsg(fleet.AllSubject(fn, c.key), fleet.CallReply(c.key, fleet.ReplyToAll, callID, 0), callID, body)); err != nil {
			return fmt.Errorf("call %s: publish: %w", fn, err)
		}
		return nil
	}
	for i, id := range cl.targets {
		if err := c.nc.PublishMsg(callMsg(cl.subject(i, fn, c.key), fleet.CallReply(c.key, cl.tokens[i], callID, 0), callID, body)); err != nil {
			return fmt.Errorf("call %s on %s: publish: %w", fn, id, err)
		}
	}
	return nil
}

// resend sends the call again to every machine still pending. Copy k of
// a call to machine m replies on fleet.CallReply(key, m, call, k): each
// copy has a reply subject of its own, so a late answer to an earlier
// copy is still told apart.
func (c *Client) resend(cl *collector, fn string, body []byte, callID string, k int) error {
	for i, id := range cl.targets {
		switch cl.state[i] {
		case pending:
		case unreachable:
			cl.state[i] = unreachableResent
		default:
			continue
		}
		cl.sum.Resent++
		if err := c.nc.PublishMsg(callMsg(cl.subject(i, fn, c.key), fleet.CallReply(c.key, cl.tokens[i], callID, k), callID, body)); err != nil {
			return fmt.Errorf("call %s on %s: re-send: %w", fn, id, err)
		}
	}
	return nil
}

// replyTarget returns the position of the machine a reply subject names,
// -1 for a broadcast's own subject and -2 for a machine not targeted. The
// broker lets only that machine publish under its token: this is who
// answered, whatever the reply's headers say.
func (cl *collector) replyTarget(subject string) int {
	r, err := fleet.ParseCallReply(subject)
	if err != nil {
		return -2
	}
	if r.Target == fleet.ReplyToAll {
		return -1
	}
	if i, ok := cl.byToken[r.Target]; ok {
		return i
	}
	return -2
}
