package controlsvc

import (
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// Call-watch bounds.
const (
	// DefaultCallWait is how long the watcher waits for a call's replies
	// before recording the missing targets as no-response: the agents'
	// default call timeout plus a margin.
	DefaultCallWait = 35 * time.Second
	// callLinger is how long a complete call stays open so requests sent
	// right after it under the same inbox (nats.go's request mux) join it.
	callLinger = 200 * time.Millisecond
	// maxWatchedCalls bounds the calls held open; past it the oldest is
	// recorded early.
	maxWatchedCalls = 10000
	// maxWatchedPerCaller bounds one operator's open calls; past it that
	// operator's oldest is recorded early, so a flood of calls nobody
	// answers cannot push other operators' calls out.
	maxWatchedPerCaller = maxWatchedCalls / 4
	// maxCopiesKept bounds the copy tokens a watched call remembers.
	maxCopiesKept = 64
	// maxCallTargets bounds the targets one watched call collects.
	maxCallTargets = 200000
)

// maxHeldTargets bounds the targets all open calls hold (a broadcast
// holds one per ONLINE machine), maxHeldPerCaller one operator's: past
// them the oldest calls are recorded early. Variables so a test can
// lower them.
var (
	maxHeldTargets   = 4_000_000
	maxHeldPerCaller = maxHeldTargets / 4
)

// callMatcher matches the calls the control service sees to their
// replies and emits one audit record per call once its replies are in or
// it stopped waiting for them. Who called is the key a call subject ends
// with and who answered the token a reply subject names: the broker lets
// only that operator, and only that machine, publish those. It is
// bookkeeping only: it sends nothing (see offlineResponder), reads the
// time from now and is fed the messages by callWatch.
type callMatcher struct {
	machines onlineMachines
	// sessions says which sessions are ONLINE (nil: none is). A call
	// to a session is matched like a direct call to a machine, the
	// session id standing for the machine.
	sessions onlineSessions
	// operatorName names the operator with a key, for the record.
	operatorName func(key string) (string, bool)
	wait         time.Duration
	now          func() time.Time
	emit         func(fleet.AuditRecord)
	// emitKeyed, when set, is told each record instead of emit, with
	// its call's key (the same on every replica: callhandover.go).
	emitKeyed func(key string, rec fleet.AuditRecord)
	// calls by key (caller, call token, function, arguments); groups by
	// the reply subject's (caller, call token[, copy]).
	calls  map[string]*watchedCall
	groups map[callGroup][]*watchedCall
	// open counts each caller's open calls.
	open map[string]int
	// latest is the newest open repeat of an id-less call by its base key
	// (see request), repeatN the number it has.
	latest  map[string]string
	repeatN map[string]int
	// held counts the targets each caller's open calls hold, heldAll
	// everyone's.
	held    map[string]int
	heldAll int
	// budget counts each session's answers that settle nothing
	// (sessionflood.go); onFlood closes a session past it (nil: none is
	// closed). maxSessionReply bounds one session answer's body (0: no
	// bound); a longer one closes the session too.
	budget          map[string]*replyBudget
	budgetPruned    time.Time
	onFlood         func(id, reason string) bool
	maxSessionReply int
	// recent remembers, for recentFor, the sessions calls recorded
	// (early, or at their deadline) left without an answer, by the
	// calls' (caller, call token): their late answers are honest and
	// not charged to the session (see closedCalls). excused marks the
	// callers some of whose remembered calls were forgotten for room,
	// until when their answers are not charged at all.
	recent  closedCalls
	excused map[string]time.Time
	// addrOf is ONLINE session id's address (nil or "": not known);
	// addrs counts the unsolicited answers of each address's sessions
	// together (sessionflood.go).
	addrOf func(id string) string
	addrs  map[string]*addrBudget
}

func newCallMatcher(machines onlineMachines, operatorName func(string) (string, bool), wait time.Duration, now func() time.Time, emit func(fleet.AuditRecord)) *callMatcher {
	return &callMatcher{machines: machines, operatorName: operatorName, wait: wait, now: now, emit: emit,
		calls: map[string]*watchedCall{}, groups: map[callGroup][]*watchedCall{}, open: map[string]int{},
		latest: map[string]string{}, repeatN: map[string]int{}, held: map[string]int{}, budget: map[string]*replyBudget{},
		recent: closedCalls{calls: map[callToken]*closedCall{}}, excused: map[string]time.Time{}, addrs: map[string]*addrBudget{}}
}

type watchedCall struct {
	// key is the call's key in calls; base its key before a repeat's
	// " #n" (see request).
	key, base string
	// digest is fleet.ArgsDigest of the call's arguments, which an
	// agent's answer echoes (fleet.HeaderArgs).
	digest   string
	group    callGroup
	rec      fleet.AuditRecord
	start    time.Time
	deadline time.Time
	targets  map[string]*fleet.AuditOutcome // by machine id
	order    []*fleet.AuditOutcome
	pending  int
	// copies are the copy tokens the call was sent under (at most
	// maxCopiesKept): an answer on one of them is this call's.
	copies map[string]bool
	// everyone: the call reaches every ONLINE machine, so one that
	// answers unexpected (it came online meanwhile) is a target too.
	everyone bool
	// lossy: the watcher dropped messages while the call was open, so
	// a target with no answer may have answered (see lost).
	lossy bool
}

// callGroup is what a call's copies share in their reply subjects: the
// caller and the call token, and the copy too for a request without a
// call id (each hand-made request is a call of its own). Its fields are
// parts of the reply subject, so looking a reply up allocates nothing.
// A call with an id and one without never share a group, even when the
// reply subject has no copy token.
type callGroup struct {
	caller, call, copy string
	idless             bool
}

func groupOf(r fleet.ReplySubject, idless bool) callGroup {
	if idless {
		return callGroup{r.Caller, r.Call, r.Copy, true}
	}
	return callGroup{caller: r.Caller, call: r.Call}
}

// repeats reports whether an id-less request to target ("": every
// machine) reaches a machine call c already reaches: the agent runs it
// again.
func repeats(c *watchedCall, target string) bool {
	if c.everyone {
		return true
	}
	if target == "" {
		return len(c.targets) > 0
	}
	id, err := targetID(target)
	return err == nil && c.targets[id] != nil
}

// targetID is the machine id or session id a reply subject's target
// token names.
func targetID(tok string) (string, error) {
	if fleet.IsSessionID(tok) {
		return tok, nil
	}
	return fleet.MachineFromToken(tok)
}

// online reports whether target id (a machine or a session) is ONLINE.
func (w *callMatcher) online(id string) bool {
	if fleet.IsSessionID(id) {
		return sessionOnline(w.sessions, id)
	}
	return w.machines.online(id)
}

// request opens call req, or adds a copy or target to the call it is one
// of. A call no agent answers (its reply subject is refused) is not one.
func (w *callMatcher) request(req callRequest) {
	if req.replyErr != nil {
		return
	}
	call, rs, m := req.call, req.reply, req.msg
	hasID := m.Header.Get(fleet.HeaderCallID) != ""
	group := groupOf(rs, !hasID)
	digest := fleet.ArgsDigest(m.Data)
	base := group.caller + " " + group.call + " " + group.copy + " " + strconv.FormatBool(group.idless) + " " + call.Function + " " + digest
	key := base
	if last, ok := w.latest[base]; ok {
		key = last
	}
	c := w.calls[key]
	if !hasID && c != nil && repeats(c, req.target) {
		// Without an id an agent runs every request that reaches it (it
		// has nothing to tell a repeat by), so a repeat to machines the
		// call already reaches is a call of its own, with a record of
		// its own: the same request sent twice is audited twice.
		for n := w.repeatN[base] + 1; ; n++ {
			key = base + " #" + strconv.Itoa(n)
			if w.calls[key] == nil {
				w.repeatN[base], w.latest[base] = n, key
				break
			}
		}
		c = nil
	}
	if c == nil {
		if w.open[call.Caller] >= maxWatchedPerCaller {
			w.flushOldest(call.Caller)
		} else if len(w.calls) >= maxWatchedCalls {
			w.flushOldest("")
		}
		// The targets the caller's open calls hold are bounded too: a
		// broadcast holds one per ONLINE machine.
		for w.held[call.Caller] >= maxHeldPerCaller && w.open[call.Caller] > 0 {
			w.flushOldest(call.Caller)
		}
		for w.heldAll >= maxHeldTargets && len(w.calls) > 0 {
			w.flushOldest("")
		}
		c = w.openCall(key, base, digest, group, call, m)
	}
	if len(c.copies) < maxCopiesKept {
		c.copies[rs.Copy] = true
	}
	now := w.now()
	if call.Token == "" {
		c.rec.Broadcast = true
	}
	if req.target == "" {
		if !c.everyone {
			// A re-sent broadcast copy does not push the call's end
			// out, as a direct one does not.
			c.deadline = now.Add(w.wait)
		}
		c.everyone = true
		w.expectOnline(c)
		if c.pending <= 0 {
			c.deadline = now.Add(callLinger)
		}
		return
	}
	id, err := targetID(req.target)
	if err != nil || fleet.IsSessionID(id) != req.session {
		return
	}
	if c.targets[id] == nil {
		// A new target waits its full time; a re-sent copy does not
		// push the call's end out.
		c.deadline = now.Add(w.wait)
	}
	o := w.target(c, id)
	if o == nil {
		return
	}
	if !w.online(id) && isOpen(o) {
		// A copy to an offline machine (a first one, or a re-send the
		// workbench sends to machines that have not answered) is
		// answered "no responders" (offlineResponder); an offline
		// verdict gives way to an answer.
		w.settle(c, o, fleet.OutcomeNoResponse, fleet.CodeUnavailable, "no agent is listening (offline?)", now)
	}
}

func (w *callMatcher) openCall(key, base, digest string, group callGroup, call fleet.Call, m *nats.Msg) *watchedCall {
	c := &watchedCall{key: key, base: base, digest: digest, group: group, start: w.now(),
		targets: map[string]*fleet.AuditOutcome{}, copies: map[string]bool{}}
	c.rec = fleet.AuditRecord{Time: c.start.UTC(), Kind: fleet.AuditCall, Function: call.Function, Subject: m.Subject,
		OperatorKey: call.Caller}
	setCallArgs(&c.rec, m.Data)
	if name, ok := w.operatorName(call.Caller); ok {
		c.rec.Operator = name
	}
	w.calls[key] = c
	w.groups[group] = append(w.groups[group], c)
	w.open[call.Caller]++
	return c
}

// target returns call c's outcome for machine id, adding it as a target
// (nil when the call has as many as it may hold).
func (c *watchedCall) target(id string) *fleet.AuditOutcome {
	if o := c.targets[id]; o != nil {
		return o
	}
	if len(c.order) >= maxCallTargets {
		return nil
	}
	o := &fleet.AuditOutcome{Machine: id, Status: fleet.OutcomeNoResponse}
	c.targets[id] = o
	c.order = append(c.order, o)
	c.pending++
	return o
}

// target is c.target, counting what the caller's calls hold.
func (w *callMatcher) target(c *watchedCall, id string) *fleet.AuditOutcome {
	n := len(c.order)
	o := c.target(id)
	if len(c.order) > n {
		w.held[c.rec.OperatorKey]++
		w.heldAll++
	}
	return o
}

// expectOnline makes every ONLINE machine a target of broadcast c.
func (w *callMatcher) expectOnline(c *watchedCall) {
	for _, id := range w.machines.onlineIDs() {
		w.target(c, id)
	}
}

func (w *callMatcher) reply(m *nats.Msg) {
	rs, err := fleet.ParseCallReply(m.Subject)
	if err != nil {
		// A session may publish anything under its own reply subjects
		// (fleet.MachineReplies): what is no answer is unsolicited too.
		if id := sessionOfReply(m.Subject); id != "" {
			w.unsolicited(id, msgSize(m))
		}
		return
	}
	if rs.Target == fleet.ReplyToAll {
		return // nothing an agent sends, or a status for the whole call
	}
	id, err := targetID(rs.Target)
	if err != nil {
		return
	}
	session := fleet.IsSessionID(id)
	if session && w.maxSessionReply > 0 && len(m.Data) > w.maxSessionReply {
		w.flood(id, fmt.Sprintf("answered with %d bytes, more than the %d a session may send (cc-control --session-max-payload)", len(m.Data), w.maxSessionReply))
	}
	noResponders := fleet.IsNoResponders(m.Header.Get(fleet.HeaderStatus), len(m.Data))
	fn := m.Header.Get(fleet.HeaderFunction)
	if fn == "" && !noResponders && !session {
		// Every answer of an agent names its function; anything else
		// published on a machine's reply subject (its micro discovery
		// reply, aimed here) is not an answer to a call.
		return
	}
	c, o := w.match(rs, id, fn, m.Header.Get(fleet.HeaderCallID) != "", m.Header.Get(fleet.HeaderArgs))
	if c == nil || (!isOpen(o) && (!isOffline(o) || noResponders)) {
		// Not a call we saw, or a duplicate: the first answer stands.
		// Only "offline" gives way, to the answer of a re-sent copy
		// that reached the machine. A session's counts against its
		// budget.
		if session && !w.lateAnswer(rs, id) {
			w.unsolicited(id, msgSize(m))
		}
		return
	}
	now := w.now()
	switch e := fleet.ErrorFromHeader(m.Header.Get(fleet.HeaderErrorCode), m.Header.Get(fleet.HeaderError)); {
	case noResponders:
		w.settle(c, o, fleet.OutcomeNoResponse, fleet.CodeUnavailable, "no agent is listening (offline?)", now)
	case e != nil:
		w.settle(c, o, fleet.OutcomeError, e.Code, e.Description, now)
	default:
		w.settle(c, o, fleet.OutcomeOK, 0, "", now)
	}
}

// match finds the call a reply from machine id belongs to, among the
// calls sharing its reply subject's group: one with that function (the
// machine's own answer says which) whose outcome for id is still open,
// else the first one that has id at all. A call to every machine gains
// id as a target if it answers unexpectedly.
func (w *callMatcher) match(rs fleet.ReplySubject, id, fn string, echoedID bool, digest string) (*watchedCall, *fleet.AuditOutcome) {
	// An answer to a call with an id echoes it (fleet.HeaderCallID):
	// such calls are grouped without their copy, id-less ones with it.
	cands := w.groups[groupOf(rs, !echoedID)]
	if len(cands) == 0 {
		cands = w.groups[groupOf(rs, echoedID)]
	}
	var first, open *watchedCall
	var openO *fleet.AuditOutcome
	for _, c := range cands {
		if fn != "" && c.rec.Function != fn {
			continue
		}
		if digest != "" && c.digest != digest {
			// An agent's answer names the arguments it ran
			// (fleet.HeaderArgs): this call is not the one it ran.
			continue
		}
		o := c.targets[id]
		if o != nil && isOpen(o) {
			// The call the answered copy was sent as, when several
			// calls (other arguments under one id) are open.
			if c.copies[rs.Copy] {
				return c, o
			}
			if open == nil {
				open, openO = c, o
			}
		}
		// A broadcast reaches machines only: a session cannot join
		// one by answering under its call token.
		if first == nil && (o != nil || c.everyone && !fleet.IsSessionID(id)) {
			first = c
		}
	}
	if open != nil {
		return open, openO
	}
	if first == nil {
		return nil, nil
	}
	o := w.target(first, id)
	if o == nil {
		return nil, nil
	}
	return first, o
}

// settle records o's outcome; only an open one counts against pending.
func (w *callMatcher) settle(c *watchedCall, o *fleet.AuditOutcome, status string, code int, desc string, now time.Time) {
	if len(desc) > 200 {
		desc = desc[:200] + "…"
	}
	wasOpen := isOpen(o)
	o.Status, o.Code, o.Error = status, code, desc
	o.DurationMS = now.Sub(c.start).Milliseconds()
	if !wasOpen {
		return
	}
	c.pending--
	if c.pending <= 0 {
		c.deadline = now.Add(callLinger)
	}
}

// flushDue records the calls whose deadline passed (all of them when
// now is zero).
func (w *callMatcher) flushDue(now time.Time) {
	for _, c := range w.calls {
		if now.IsZero() || !now.Before(c.deadline) {
			w.flush(c)
		}
	}
}

// flushOldest records the oldest open call of caller ("" for anyone's).
func (w *callMatcher) flushOldest(caller string) {
	var oldest *watchedCall
	for _, c := range w.calls {
		if caller != "" && c.rec.OperatorKey != caller {
			continue
		}
		if oldest == nil || c.start.Before(oldest.start) {
			oldest = c
		}
	}
	if oldest != nil {
		// Its replies are not all in: what is still open is not known,
		// which is not the same as no answer.
		untrack(oldest, untrackedText)
		w.flush(oldest)
	}
}

// untrack records every target of c still open as untracked, why saying
// why.
func untrack(c *watchedCall, why string) {
	for _, o := range c.order {
		if isOpen(o) {
			o.Status, o.Error = fleet.OutcomeUntracked, why
		}
	}
}

// lost tells the matcher the watcher dropped messages: an answer to any
// call open now may be among them, so what those calls have not heard
// from is recorded untracked, not no-response.
func (w *callMatcher) lost() {
	for _, c := range w.calls {
		c.lossy = true
	}
}

// untrackedText says why an outcome is untracked.
const untrackedText = "recorded before its answer was in: the operator (or everyone) had too many calls open; whether it ran is not known"

// lostText says why an outcome is untracked after the watcher dropped
// messages.
const lostText = "the control service's call watcher fell behind and dropped messages while this call was open; whether it answered is not known"

func (w *callMatcher) flush(c *watchedCall) {
	if c.lossy {
		untrack(c, lostText)
	}
	w.rememberClosed(c)
	delete(w.calls, c.key)
	if w.latest[c.base] == c.key {
		delete(w.latest, c.base)
		delete(w.repeatN, c.base)
	}
	if w.open[c.rec.OperatorKey]--; w.open[c.rec.OperatorKey] <= 0 {
		delete(w.open, c.rec.OperatorKey)
	}
	w.heldAll -= len(c.order)
	if w.held[c.rec.OperatorKey] -= len(c.order); w.held[c.rec.OperatorKey] <= 0 {
		delete(w.held, c.rec.OperatorKey)
	}
	g := w.groups[c.group]
	for i, x := range g {
		if x == c {
			g = append(g[:i], g[i+1:]...)
			break
		}
	}
	if len(g) == 0 {
		delete(w.groups, c.group)
	} else {
		w.groups[c.group] = g
	}
	rec := c.rec
	rec.Targets = len(c.order)
	rec.Outcomes = make([]fleet.AuditOutcome, 0, len(c.order))
	for _, o := range c.order {
		rec.Outcomes = append(rec.Outcomes, *o)
		switch o.Status {
		case fleet.OutcomeOK:
			rec.OK++
		case fleet.OutcomeError:
			rec.Errors++
		case fleet.OutcomeUntracked:
		default:
			rec.NoResp++
		}
	}
	sort.SliceStable(rec.Outcomes, func(i, j int) bool { return rec.Outcomes[i].Machine < rec.Outcomes[j].Machine })
	if w.emitKeyed != nil {
		w.emitKeyed(c.key, rec)
		return
	}
	w.emit(rec)
}

// isOpen reports whether target o has had no answer yet.
func isOpen(o *fleet.AuditOutcome) bool {
	return o.Status == fleet.OutcomeNoResponse && o.Code == 0
}

// isOffline reports whether o was settled by a "no responders" answer.
func isOffline(o *fleet.AuditOutcome) bool {
	return o.Status == fleet.OutcomeNoResponse && o.Code == fleet.CodeUnavailable
}
