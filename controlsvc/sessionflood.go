package controlsvc

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// A session may publish under its own reply subjects
// (fleet.MachineReplies) whenever it likes, and the call watcher hears
// every reply subject: a session sending answers nobody asked for could
// push the watcher behind, and the broker then drops messages to it (it
// runs with NoFastProducerStall), real answers too. So the watcher
// counts, per session, the answers that settle no open call, over a
// sliding window on the service's clock; past the budget the session's
// connection is closed (session presence's kick), logged and audited as
// refused. An answer longer than the session payload limit closes it at
// once. Machines are registered and not counted.

// Unsolicited-answer budget of one session.
const (
	// sessionReplyBudget is how many answers settling nothing a session
	// may send per sessionReplyWindow.
	sessionReplyBudget = 64
	// sessionReplyWindow is the sliding window the budget counts over.
	sessionReplyWindow = 10 * time.Second
	// floodRetry spaces the attempts to close a session presence does
	// not (yet) hold, while it goes on sending.
	floodRetry = 100 * time.Millisecond
	// floodLogEvery spaces the log lines about closed sessions.
	floodLogEvery = 10 * time.Second
)

// DefaultSessionMaxPayload is Config.SessionMaxPayload's default: the
// largest message a session may publish (its answers).
const DefaultSessionMaxPayload = 64 << 10

// sessionSubsSlack is how many subscriptions a session may hold beyond
// one per function of its app (its client library may resubscribe, or
// hold an inbox for requests of its own, which its permissions refuse).
const sessionSubsSlack = 4

// replyBudget is one session's count of answers settling nothing: cur in
// the window starting at start, prev in the one before it.
type replyBudget struct {
	start     time.Time
	prev, cur int
	// next is when the session may be closed (again): a close asked
	// for is not repeated for a window, a failed one for floodRetry.
	next time.Time
}

// count adds one answer at now and returns the sliding estimate of the
// answers in the last window: the current window's and the share of the
// previous one still inside it.
func (b *replyBudget) count(now time.Time) int { return b.add(now, 1) }

// add is count for n at once.
func (b *replyBudget) add(now time.Time, n int) int {
	if d := now.Sub(b.start); d >= sessionReplyWindow || d < 0 {
		if d >= 2*sessionReplyWindow || d < 0 {
			b.prev, b.start = 0, now
		} else {
			b.prev, b.start = b.cur, b.start.Add(sessionReplyWindow)
		}
		b.cur = 0
	}
	b.cur += n
	left := sessionReplyWindow - now.Sub(b.start)
	return b.cur + int(int64(b.prev)*int64(left)/int64(sessionReplyWindow))
}

// sessionOfReply is the session id a reply subject names as its target
// ("" when it names none): its third token (fleet.CallReply).
func sessionOfReply(subject string) string {
	rest, ok := strings.CutPrefix(subject, fleet.InboxRoot+".")
	if !ok {
		return ""
	}
	_, rest, ok = strings.Cut(rest, ".")
	if !ok {
		return ""
	}
	tok, _, _ := strings.Cut(rest, ".")
	if !fleet.IsSessionID(tok) {
		return ""
	}
	return tok
}

// unsolicited counts an answer of session id, size bytes long, that
// settled nothing.
func (w *callMatcher) unsolicited(id string, size int) {
	now := w.now()
	w.unsolicitedFrom(id, size, now)
	b := w.budget[id]
	if b == nil {
		b = &replyBudget{start: now}
		w.budget[id] = b
	}
	if n := b.count(now); n > sessionReplyBudget {
		w.floodAt(b, id, fmt.Sprintf("sent %d answers in %s that answer no open call (at most %d)", n, sessionReplyWindow, sessionReplyBudget), now)
	}
}

// flood closes session id now.
func (w *callMatcher) flood(id, reason string) {
	now := w.now()
	b := w.budget[id]
	if b == nil {
		b = &replyBudget{start: now}
		w.budget[id] = b
	}
	w.floodAt(b, id, reason, now)
}

func (w *callMatcher) floodAt(b *replyBudget, id, reason string, now time.Time) {
	if w.onFlood == nil || now.Before(b.next) {
		return
	}
	if w.onFlood(id, reason) {
		b.next = now.Add(sessionReplyWindow)
	} else {
		b.next = now.Add(floodRetry)
	}
}

// pruneBudgets forgets, once a window, the sessions whose count is all
// in the past.
func (w *callMatcher) pruneBudgets(now time.Time) {
	if now.Sub(w.budgetPruned) < sessionReplyWindow {
		return
	}
	w.budgetPruned = now
	for id, b := range w.budget {
		if now.Sub(b.start) >= 2*sessionReplyWindow && !now.Before(b.next) {
			delete(w.budget, id)
		}
	}
	for key, a := range w.addrs {
		if now.Sub(a.bytes.start) >= 2*sessionReplyWindow {
			delete(w.addrs, key)
		}
	}
	for caller, until := range w.excused {
		if !now.Before(until) {
			delete(w.excused, caller)
		}
	}
}

// penalize puts address ip's bucket in debt for d: its session (and
// WebSocket) attempts are refused until then. Penalties do not stack:
// the debt is at most d's worth, so however many of its sessions were
// closed, an address (a NAT may hold many honest users) is locked out at
// most d after its last closure. A bucket in debt is never forgotten. An address the limiter has no room for is not penalized (the
// shared bucket of newcomers is not theirs to lose).
func (l *ipLimiter) penalize(ip string, d time.Duration) {
	if l == nil || ip == "" {
		return
	}
	now := l.now()
	key := limiterKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.max {
			return
		}
		b = &ipBucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	l.refillLocked(b, now)
	b.tokens = min(b.tokens, -l.rate*d.Seconds())
	b.lastRefused = now
}

// floodLog spaces the log lines about sessions closed for flooding.
type floodLog struct {
	last       time.Time
	suppressed int
}

// sessionFlood closes session id for reason (the call watcher's verdict):
// it leaves presence at once, its connection is kicked, the closure is
// audited as refused and logged (at most once per floodLogEvery, with the
// count of those not logged). It runs on the watcher's goroutine and
// does not block. False: the session is not ONLINE (yet).
func (s *Service) sessionFlood(id, reason string) bool {
	sess, ok := s.presence.sessions.closeSession(id, "closed: "+reason)
	if !ok {
		return false
	}
	s.auditRefusedAt("session", sess.ID, "", sess.IP, "", "connection closed: "+reason)
	// Its address may not come straight back for another burst: its
	// session attempts are refused for a window.
	s.sessionIPs.Load().penalize(sess.IP, sessionReplyWindow)
	t := s.cfg.Now()
	s.mu.Lock()
	fl := &s.floodLog
	logIt := fl.last.IsZero() || t.Sub(fl.last) >= floodLogEvery
	n := fl.suppressed
	if logIt {
		fl.last, fl.suppressed = t, 0
	} else {
		fl.suppressed++
	}
	s.mu.Unlock()
	if logIt {
		s.log.Warn("session closed", "session", sess.ID, "app", sess.App, "ip", sess.IP, "reason", reason, "closed_since_last_report", n)
	}
	return true
}

// sessionMaxPayload is the largest message a session may publish: the
// configured bound, within what the broker takes.
func (s *Service) sessionMaxPayload() int {
	n := s.cfg.SessionMaxPayload
	if s.calls != nil && s.calls.MaxPayload() > 0 {
		n = min(n, int(s.calls.MaxPayload()))
	}
	return n
}

// kickSessions is kick with a fast path for connections to the embedded
// broker: it closes them itself, at once, where a KICK request would
// travel through the system account while a flooding session goes on
// sending.
func (s *Service) kickSessions(kick func(context.Context, []connKey) int) func(context.Context, []connKey) int {
	return func(ctx context.Context, conns []connKey) int {
		b := s.broker
		if b == nil {
			return kick(ctx, conns)
		}
		srv := b.Server()
		n, rest := 0, conns[:0:0]
		for _, k := range conns {
			if k.server == srv.ID() && srv.DisconnectClientByID(k.cid) == nil {
				n++
				continue
			}
			rest = append(rest, k)
		}
		if len(rest) > 0 {
			n += kick(ctx, rest)
		}
		return n
	}
}

// Late answers. A call is recorded when its replies are in, at its
// deadline, or early when its caller (or everyone) has too many calls
// open (flushOldest): an operator flooding calls nobody answers pushes
// its own oldest out, calls to honest sessions among them. Their answers
// arriving afterwards settle nothing, but they answer a call the watcher
// saw: they are not the session's flood, and charging them would let an
// operator get any honest session closed, its address penalized and the
// audit blaming it. So the watcher remembers, for recentFor, which
// sessions each recorded call left without an answer, by (caller, call
// token), and their answers there are not charged (each at most
// lateExcused times). Only answers under a (caller, call) the watcher
// never saw, or from a session it did not call, are charged.
const (
	// recentFor is how long a recorded call's late answers are excused,
	// in units of the call wait.
	recentFor = 2
	// lateExcused is how many late answers of one session to one call
	// are excused (it may answer each re-sent copy).
	lateExcused = 8
)

// maxRecentTargets bounds the sessions the remembered calls hold; past
// it the oldest are forgotten and their callers' answers are not charged
// at all for recentFor call waits. A variable so a test can lower it.
var maxRecentTargets = 100000

// callToken is a call's (caller, call token), as its reply subjects name
// them.
type callToken struct{ caller, call string }

// closedCall is a recorded call's sessions that had not answered (with
// the late answers each may still send uncharged), until until.
type closedCall struct {
	sessions map[string]int
	until    time.Time
}

// closedCalls is the remembered calls, oldest first in order; n counts
// the sessions they hold.
type closedCalls struct {
	calls map[callToken]*closedCall
	order []callToken
	n     int
}

// rememberClosed remembers the sessions call c, being recorded, has not
// heard from.
func (w *callMatcher) rememberClosed(c *watchedCall) {
	now := w.now()
	w.pruneRecent(now)
	k := callToken{c.group.caller, c.group.call}
	for _, o := range c.order {
		if !fleet.IsSessionID(o.Machine) || !(isOpen(o) || o.Status == fleet.OutcomeUntracked) {
			continue
		}
		cc := w.recent.calls[k]
		if cc == nil {
			cc = &closedCall{sessions: map[string]int{}}
			w.recent.calls[k] = cc
			w.recent.order = append(w.recent.order, k)
		}
		cc.until = now.Add(recentFor * w.wait)
		if _, ok := cc.sessions[o.Machine]; !ok {
			w.recent.n++
		}
		cc.sessions[o.Machine] = lateExcused
	}
	for w.recent.n > maxRecentTargets && len(w.recent.order) > 0 {
		// No room: the oldest's caller is excused whole for a while.
		old := w.recent.order[0]
		w.excused[old.caller] = now.Add(recentFor * w.wait)
		w.dropRecent()
	}
}

// dropRecent forgets the oldest remembered call.
func (w *callMatcher) dropRecent() {
	k := w.recent.order[0]
	w.recent.order[0] = callToken{}
	w.recent.order = w.recent.order[1:]
	if cc := w.recent.calls[k]; cc != nil {
		w.recent.n -= len(cc.sessions)
		delete(w.recent.calls, k)
	}
}

// pruneRecent forgets the remembered calls past their time (the oldest
// first: their times only grow along order, but for a call remembered
// again, which stays until the older ones before it go).
func (w *callMatcher) pruneRecent(now time.Time) {
	for len(w.recent.order) > 0 {
		cc := w.recent.calls[w.recent.order[0]]
		if cc != nil && now.Before(cc.until) {
			break
		}
		w.dropRecent()
	}
	if len(w.recent.order) == 0 {
		w.recent.order = nil
	}
}

// lateAnswer reports whether session id's answer on rs, which settles
// no open call, answers a call recorded recently that had not heard
// from it (or comes from a caller excused whole): it is not charged.
func (w *callMatcher) lateAnswer(rs fleet.ReplySubject, id string) bool {
	now := w.now()
	w.pruneRecent(now)
	if until, ok := w.excused[rs.Caller]; ok {
		if now.Before(until) {
			return true
		}
		delete(w.excused, rs.Caller)
	}
	cc := w.recent.calls[callToken{rs.Caller, rs.Call}]
	if cc == nil || !now.Before(cc.until) {
		return false
	}
	left, ok := cc.sessions[id]
	if !ok || left <= 0 {
		return false
	}
	cc.sessions[id] = left - 1
	return true
}

// Each session keeps within its own budget, but many of them together
// (one address may hold many sessions: a public app admits them at its
// rate) could still send the watcher more than it keeps up with, and the
// broker drops what it cannot take. So the unsolicited answers of one
// address's sessions (an IPv4 address, an IPv6 /64: the admission
// limiter's keys) count together too, in bytes and messages over the
// same window; past either, every session of the address that sent
// unsolicited answers in the window is closed (the address's penalty
// does not stack: ipLimiter.penalize).
const (
	// addrReplyBytes is how many bytes of unsolicited answers one
	// address's sessions may send per sessionReplyWindow.
	addrReplyBytes = 4 << 20
	// addrReplyMessages is how many unsolicited answers one address's
	// sessions may send per sessionReplyWindow.
	addrReplyMessages = 512
	// maxAddrBudgets bounds the addresses counted; past it a new
	// address is not (its sessions' own budgets still hold).
	maxAddrBudgets = 10000
	// maxAddrSenders bounds the sessions one address's count
	// remembers as senders (the one sending is closed however many).
	maxAddrSenders = 1024
)

// addrBudget is one address's count of unsolicited answers: bytes and
// messages, and the sessions that sent them (when last).
type addrBudget struct {
	bytes, msgs replyBudget
	senders     map[string]time.Time
}

// msgSize is what message m costs the watcher, about.
func msgSize(m *nats.Msg) int {
	n := len(m.Subject) + len(m.Reply) + len(m.Data)
	for k, vs := range m.Header {
		n += len(k)
		for _, v := range vs {
			n += len(v)
		}
	}
	return n
}

// unsolicitedFrom counts session id's unsolicited answer of size bytes
// against its address's budget.
func (w *callMatcher) unsolicitedFrom(id string, size int, now time.Time) {
	if w.addrOf == nil {
		return
	}
	ip := w.addrOf(id)
	if ip == "" {
		return
	}
	key := limiterKey(ip)
	a := w.addrs[key]
	if a == nil {
		if len(w.addrs) >= maxAddrBudgets {
			return
		}
		a = &addrBudget{bytes: replyBudget{start: now}, msgs: replyBudget{start: now}, senders: map[string]time.Time{}}
		w.addrs[key] = a
	}
	if _, ok := a.senders[id]; ok || len(a.senders) < maxAddrSenders {
		a.senders[id] = now
	}
	nb, nm := a.bytes.add(now, size), a.msgs.count(now)
	if nb <= addrReplyBytes && nm <= addrReplyMessages {
		return
	}
	reason := fmt.Sprintf("its address's sessions sent %d answers (%d bytes) in %s that answer no open call (at most %d answers, %d bytes, per address)",
		nm, nb, sessionReplyWindow, addrReplyMessages, addrReplyBytes)
	if _, ok := a.senders[id]; !ok {
		w.flood(id, reason)
	}
	for sid, last := range a.senders {
		if now.Sub(last) >= sessionReplyWindow {
			delete(a.senders, sid)
			continue
		}
		w.flood(sid, reason)
		delete(a.senders, sid)
	}
}

// ipOfSession is ONLINE session id's address ("" when not known); a nil
// p knows none.
func (p *sessionPresence) ipOfSession(id string) string {
	if p == nil {
		return ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.sessions[id]; st != nil {
		return st.s.IP
	}
	return ""
}
