package controlsvc

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// CallHook is told of every function call the control service observed,
// once its replies are in or it stopped waiting for them: operator,
// function, arguments and the outcome per target (all of them, in one
// record). Hooks run on the watcher's goroutine and must not block.
// Metrics can hang off the same hook as the audit log.
type CallHook func(fleet.AuditRecord)

// OnCall registers h; call it before Start.
func (s *Service) OnCall(h CallHook) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.callHooks = append(s.callHooks, h)
}

// callWatch sees every call (on sys.commandControl.fn.>, .all.> and, to
// sessions, .sfn.>) and
// every reply (on the operators' inboxes, _INBOX_cc.>) on a FLEET
// connection of its own, and hands each call to the offlineResponder
// (noresponders.go), which answers those no agent will, and each call
// and reply to the callMatcher (callmatch.go), which records them.
type callWatch struct {
	nc        *nats.Conn
	responder *offlineResponder
	matcher   *callMatcher
	msgs      chan *nats.Msg
	subs      []*nats.Subscription
	quit      chan struct{}
	done      sync.WaitGroup
	// dropped counts the messages the subscriptions dropped (nil: their
	// nats Dropped counts); lastDropped is what it was last seen.
	dropped     func() int
	lastDropped int
	// active says whether this replica answers for offline machines
	// now: the presence publisher alone does, once (leader.go). Nil:
	// always. Every replica matches calls; callHandover decides who
	// records them.
	active func() bool
	// onTick runs at every tick of the loop (nil: nothing).
	onTick func()
}

func newCallWatch(nc *nats.Conn, responder *offlineResponder, matcher *callMatcher) *callWatch {
	return &callWatch{nc: nc, responder: responder, matcher: matcher,
		msgs: make(chan *nats.Msg, 1<<18), quit: make(chan struct{})}
}

// callRequest is a call the watcher saw, parsed once for the responder
// and the matcher.
type callRequest struct {
	msg  *nats.Msg
	call fleet.Call
	// reply is the parsed reply subject; replyErr says why no agent
	// answers on it.
	reply    fleet.ReplySubject
	replyErr error
	// target is the token of the one machine that answers the call, ""
	// for every ONLINE machine: a direct call's, or that of the machine a
	// broadcast's reply subject names (only it answers, fleet.AgentReply).
	// For a call to a session, the session id.
	target string
	// session: a call to a session (fleet.SessionFnSubject).
	session bool
}

// parseCallRequest parses a message seen on a call subject; ok is false
// for one that is no call or that wants no answer.
func parseCallRequest(m *nats.Msg) (req callRequest, ok bool) {
	call, err := fleet.ParseFnSubject(m.Subject)
	session := false
	if strings.HasPrefix(m.Subject, fleet.SessionFnRoot+".") {
		// A call to a session: its token is the session id, the one
		// target (sessions have no broadcast).
		call, err = fleet.ParseSessionFnSubject(m.Subject)
		session = true
	}
	if err != nil || m.Reply == "" {
		return callRequest{}, false
	}
	req = callRequest{msg: m, call: call, session: session}
	req.reply, req.replyErr = fleet.CallReplyFor(call, m.Reply)
	req.target = call.Token
	if req.target == "" && req.replyErr == nil && req.reply.Target != fleet.ReplyToAll {
		req.target = req.reply.Target
	}
	return req, true
}

// start subscribes and processes on one goroutine, so a reply is never
// handled before the request it answers when both come the same way.
func (w *callWatch) start() error {
	for _, subj := range []string{fleet.DirectCallsWildcard, fleet.BroadcastsWildcard, fleet.SessionCallsWildcard, fleet.InboxesWildcard} {
		sub, err := w.nc.ChanSubscribe(subj, w.msgs)
		if err != nil {
			w.stop()
			return err
		}
		w.subs = append(w.subs, sub)
	}
	if err := w.nc.Flush(); err != nil {
		w.stop()
		return err
	}
	w.done.Add(1)
	go w.loop()
	return nil
}

func (w *callWatch) stop() {
	for _, s := range w.subs {
		_ = s.Unsubscribe()
	}
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	w.done.Wait()
}

func (w *callWatch) loop() {
	defer w.done.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-w.quit:
			w.matcher.flushDue(time.Time{})
			return
		case m := <-w.msgs:
			w.handle(m)
		case <-t.C:
			w.checkDrops()
			now := w.matcher.now()
			w.matcher.flushDue(now)
			w.matcher.pruneBudgets(now)
			if w.onTick != nil {
				w.onTick()
			}
		}
	}
}

// checkDrops tells the matcher when the subscriptions dropped messages
// since it last looked (a slow consumer), or the connection reconnected:
// an answer may be lost, so the calls open are recorded untracked where
// they have no answer. (A broker that drops messages to the connection
// rather than stall their publisher does not say so: the flood limits of
// sessionflood.go keep the connection from falling that far behind.)
func (w *callWatch) checkDrops() {
	n := 0
	if w.dropped != nil {
		n = w.dropped()
	} else {
		for _, s := range w.subs {
			if d, err := s.Dropped(); err == nil {
				n += d
			}
		}
		if w.nc != nil {
			// A reconnect (the broker closed the connection as a slow
			// consumer, say) loses what was sent meanwhile.
			n += int(w.nc.Stats().Reconnects)
		}
	}
	if n != w.lastDropped {
		w.lastDropped = n
		w.matcher.lost()
	}
}

// handle passes one message seen to the responder and the matcher.
func (w *callWatch) handle(m *nats.Msg) {
	if fleet.IsInboxSubject(m.Subject) {
		w.matcher.reply(m)
		return
	}
	if req, ok := parseCallRequest(m); ok {
		if w.active == nil || w.active() {
			w.responder.request(req)
		}
		w.matcher.request(req)
	}
}

// splitCallRecord cuts a call record into parts of at most
// fleet.AuditMaxOutcomes outcomes each, every part with the totals.
func splitCallRecord(rec fleet.AuditRecord) []fleet.AuditRecord {
	if len(rec.Outcomes) <= fleet.AuditMaxOutcomes {
		return []fleet.AuditRecord{rec}
	}
	all := rec.Outcomes
	n := (len(all) + fleet.AuditMaxOutcomes - 1) / fleet.AuditMaxOutcomes
	out := make([]fleet.AuditRecord, 0, n)
	for i := range n {
		p := rec
		p.Part, p.Parts = i+1, n
		p.Outcomes = all[i*fleet.AuditMaxOutcomes : min(len(all), (i+1)*fleet.AuditMaxOutcomes)]
		if i > 0 {
			p.Args = nil
		}
		out = append(out, p)
	}
	return out
}

// watchCalls starts the call watcher on the service's calls connection;
// the audit log is its first hook, fed through the call handover (only
// the presence publisher records calls). stop ends it.
func (s *Service) watchCalls() (stop func(), err error) {
	s.mu.Lock()
	hooks := s.callHooks
	s.mu.Unlock()
	now := time.Now
	if s.cfg.Now != nil {
		now = s.cfg.Now
	}
	operatorName := func(key string) (string, bool) {
		op, ok := s.reg.OperatorByKey(key)
		return op.Name, ok
	}
	write := func(key string, rec fleet.AuditRecord) {
		for _, p := range splitCallRecord(rec) {
			k := ""
			if p.Part <= 1 {
				k = key
			}
			s.audit.recordCall(p, k)
		}
		for _, h := range hooks {
			h(rec)
		}
	}
	lost := func(n int, first, last time.Time, why string) {
		s.audit.dropSpan(logCalls, fleet.AuditCall, why, int64(n), first.UTC(), last.UTC())
	}
	// Kept longer than a takeover (a lease to expire, a try) and than a
	// call stays open after another replica recorded it early.
	keep := 2*s.cfg.LeaderLease + s.cfg.CallWait + 10*time.Second
	handover := newCallHandover(now, s.presence.publishing, keep, write, lost)
	if err := s.watchWritten(s.ctl, handover); err != nil {
		return nil, err
	}
	matcher := newCallMatcher(s.presence.state, operatorName, s.cfg.CallWait, now, nil)
	matcher.emitKeyed = handover.record
	matcher.sessions = s.presence.sessions
	matcher.onFlood, matcher.maxSessionReply = func(id, reason string) bool {
		// One replica closes a flooding session (and audits it).
		return s.presence.publishing() && s.sessionFlood(id, reason)
	}, s.sessionMaxPayload()
	matcher.addrOf = s.presence.sessions.ipOfSession
	w := newCallWatch(s.calls, &offlineResponder{machines: s.presence.state, sessions: s.presence.sessions, publish: s.calls.PublishMsg}, matcher)
	w.active = s.presence.publishing
	w.onTick = handover.tick
	if err := w.start(); err != nil {
		return nil, fmt.Errorf("watch calls: %w", err)
	}
	s.closers = append(s.closers, w.stop)
	return w.stop, nil
}
