package controlsvc

import (
	"fmt"
	"log/slog"
	"sort"
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
	// maxCallTargets bounds the targets one watched call collects.
	maxCallTargets = 200000
)

// callWatch sees every call (on sys.commandControl.fn.> and .all.>) and
// every reply (on the operators' inboxes, _INBOX_cc.>) on a FLEET
// connection of its own, correlates them by reply subject and emits one
// record per call. It also answers "no responders" for a direct call to
// a machine that is not ONLINE: its own subscription would otherwise hide
// from the broker that nobody serves that subject.
type callWatch struct {
	nc      *nats.Conn
	log     *slog.Logger
	reg     *Registry
	pres    *presence
	wait    time.Duration
	hooks   []CallHook
	now     func() time.Time
	calls   map[string]*watchedCall // by inbox prefix + function
	byReply map[string]*watchedCall
	msgs    chan *nats.Msg
	subs    []*nats.Subscription
	quit    chan struct{}
	done    sync.WaitGroup
}

type watchedCall struct {
	key      string
	rec      fleet.AuditRecord
	start    time.Time
	deadline time.Time
	replies  []string
	direct   map[string]*fleet.AuditOutcome // by reply subject
	// directByMachine: a direct target's first outcome, for re-sent copies.
	directByMachine map[string]*fleet.AuditOutcome
	machines        map[string]*fleet.AuditOutcome // broadcast: by machine
	order           []*fleet.AuditOutcome
	pending         int
	truncated       bool
}

func newCallWatch(nc *nats.Conn, log *slog.Logger, reg *Registry, pres *presence, wait time.Duration, hooks []CallHook) *callWatch {
	return &callWatch{nc: nc, log: log, reg: reg, pres: pres, wait: wait, hooks: hooks, now: time.Now,
		calls: map[string]*watchedCall{}, byReply: map[string]*watchedCall{},
		msgs: make(chan *nats.Msg, 1<<18), quit: make(chan struct{})}
}

// start subscribes and processes on one goroutine, so a reply is never
// handled before the request it answers when both come the same way.
func (w *callWatch) start() error {
	for _, subj := range []string{fleet.FnRoot + ".>", fleet.AllRoot + ".>", fleet.InboxRoot + ".>"} {
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
			w.flushDue(time.Time{})
			return
		case m := <-w.msgs:
			if strings.HasPrefix(m.Subject, fleet.InboxRoot+".") {
				w.reply(m)
			} else {
				w.request(m)
			}
		case <-t.C:
			w.flushDue(w.now())
		}
	}
}

func (w *callWatch) request(m *nats.Msg) {
	if m.Reply == "" {
		return // nobody answers a call without a reply subject
	}
	tok, fn, err := fleet.ParseFnSubject(m.Subject)
	if err != nil {
		return
	}
	key := callPrefix(m.Reply) + " " + fn
	c := w.calls[key]
	if c == nil || c.truncated {
		if len(w.calls) >= maxWatchedCalls {
			w.flushOldest()
		}
		c = w.open(key, fn, m)
	}
	now := w.now()
	if _, dup := w.byReply[m.Reply]; !dup {
		w.byReply[m.Reply] = c
		c.replies = append(c.replies, m.Reply)
	}
	if tok != "" {
		id, err := fleet.MachineFromToken(tok)
		if err != nil {
			id = tok
		}
		if o := c.outcome(m.Reply, id, m.Header.Get(fleet.HeaderCallID) != ""); o != nil {
			// A re-sent copy (the workbench re-sends to machines that
			// have not answered): no new target and no longer wait; an
			// offline machine's copy still gets its "no responders".
			c.direct[m.Reply] = o
			if !w.pres.online(id) {
				w.noResponders(m.Reply)
				if isOpen(o) {
					w.settle(c, o, fleet.OutcomeNoResponse, fleet.CodeUnavailable, "no agent is listening (offline?)", now)
				}
			}
			return
		}
	}
	c.deadline = now.Add(w.wait)
	if tok == "" {
		w.expectOnline(c, m.Reply)
		if c.pending <= 0 {
			c.deadline = now.Add(callLinger)
		}
		return
	}
	id, err := fleet.MachineFromToken(tok)
	if err != nil {
		id = tok
	}
	o := &fleet.AuditOutcome{Machine: id, Status: fleet.OutcomeNoResponse}
	if len(c.order) >= maxCallTargets {
		c.truncated = true
		return
	}
	c.direct[m.Reply] = o
	if _, ok := c.directByMachine[id]; !ok {
		c.directByMachine[id] = o
	}
	c.order = append(c.order, o)
	c.pending++
	if !w.pres.online(id) {
		w.noResponders(m.Reply)
		w.settle(c, o, fleet.OutcomeNoResponse, fleet.CodeUnavailable, "no agent is listening (offline?)", now)
	}
}

func (w *callWatch) open(key, fn string, m *nats.Msg) *watchedCall {
	c := &watchedCall{key: key, start: w.now(), direct: map[string]*fleet.AuditOutcome{}, directByMachine: map[string]*fleet.AuditOutcome{}, machines: map[string]*fleet.AuditOutcome{}}
	c.rec = fleet.AuditRecord{Time: c.start.UTC(), Kind: fleet.AuditCall, Function: fn, Subject: m.Subject}
	setCallArgs(&c.rec, m.Data)
	if key, ok := inboxOwner(m.Reply); ok {
		c.rec.OperatorKey = key
		if op, ok := w.reg.OperatorByKey(key); ok {
			c.rec.Operator = op.Name
		}
	}
	w.calls[key] = c
	return c
}

// inboxOwner returns the operator key of an _INBOX_cc.<key>.… subject.
func inboxOwner(reply string) (string, bool) {
	rest, ok := strings.CutPrefix(reply, fleet.InboxRoot+".")
	if !ok {
		return "", false
	}
	key, _, _ := strings.Cut(rest, ".")
	return key, key != ""
}

// expectOnline makes every ONLINE machine a target of broadcast c.
func (w *callWatch) expectOnline(c *watchedCall, reply string) {
	c.rec.Broadcast = true
	ids := w.pres.onlineIDs()
	for _, id := range ids {
		if _, ok := c.machines[id]; ok || len(c.order) >= maxCallTargets {
			continue
		}
		o := &fleet.AuditOutcome{Machine: id, Status: fleet.OutcomeNoResponse}
		c.machines[id] = o
		c.order = append(c.order, o)
		c.pending++
	}
	if len(ids) == 0 {
		w.noResponders(reply)
	}
}

// noResponders answers as the broker would when nobody serves a subject.
func (w *callWatch) noResponders(reply string) {
	m := nats.NewMsg(reply)
	m.Header.Set("Status", "503")
	m.Header.Set("Description", "No Responders")
	_ = w.nc.PublishMsg(m)
}

func (w *callWatch) reply(m *nats.Msg) {
	c := w.byReply[m.Subject]
	if c == nil {
		return
	}
	now := w.now()
	machine := m.Header.Get(fleet.HeaderMachine)
	var o *fleet.AuditOutcome
	if c.rec.Broadcast {
		if machine == "" {
			return
		}
		if o = c.machines[machine]; o == nil {
			if len(c.order) >= maxCallTargets {
				return
			}
			o = &fleet.AuditOutcome{Machine: machine, Status: fleet.OutcomeNoResponse}
			c.machines[machine] = o
			c.order = append(c.order, o)
			c.pending++
		}
	} else if o = c.direct[m.Subject]; o == nil {
		return
	}
	noResponders := machine == "" && m.Header.Get("Status") == "503" && len(m.Data) == 0
	if !isOpen(o) && (!isOffline(o) || noResponders) {
		// A duplicate; the first answer stands. Only "offline" gives way,
		// to the answer of a re-sent copy that reached the machine.
		return
	}
	switch e := fleet.ErrorFromHeader(m.Header.Get(fleet.HeaderErrorCode), m.Header.Get(fleet.HeaderError)); {
	case noResponders:
		w.settle(c, o, fleet.OutcomeNoResponse, fleet.CodeUnavailable, "no agent is listening (offline?)", now)
	case e != nil:
		w.settle(c, o, fleet.OutcomeError, e.Code, e.Description, now)
	default:
		w.settle(c, o, fleet.OutcomeOK, 0, "", now)
	}
}

// outcome returns the target a copy of call c on reply subject for
// machine id belongs to, if the call has it already. A copy with a call id
// (the workbench's re-send, on a reply subject of its own) is the same
// target as the machine's earlier copy; without one, each reply subject
// is a request of its own.
func (c *watchedCall) outcome(reply, id string, hasCallID bool) *fleet.AuditOutcome {
	if o := c.direct[reply]; o != nil {
		return o
	}
	if c.rec.Broadcast {
		return c.machines[id]
	}
	if hasCallID {
		return c.directByMachine[id]
	}
	return nil
}

// callPrefix is the part of a reply subject shared by one call's copies:
// _INBOX_cc.<operator key>.<id> of the workbench's
// _INBOX_cc.<key>.<id>.<target>[.<copy>] and of nats.go's request mux
// _INBOX_cc.<key>.<mux id>.<token>; for a shorter subject, all but its
// last token.
func callPrefix(reply string) string {
	n := 0
	for i := 0; i < len(reply); i++ {
		if reply[i] == '.' {
			if n++; n == 3 {
				return reply[:i]
			}
		}
	}
	if i := strings.LastIndexByte(reply, '.'); i > 0 {
		return reply[:i]
	}
	return reply
}

// settle records o's outcome; only an open one counts against pending.
func (w *callWatch) settle(c *watchedCall, o *fleet.AuditOutcome, status string, code int, desc string, now time.Time) {
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
func (w *callWatch) flushDue(now time.Time) {
	for _, c := range w.calls {
		if now.IsZero() || !now.Before(c.deadline) {
			w.flush(c)
		}
	}
}

func (w *callWatch) flushOldest() {
	var oldest *watchedCall
	for _, c := range w.calls {
		if oldest == nil || c.start.Before(oldest.start) {
			oldest = c
		}
	}
	if oldest != nil {
		w.flush(oldest)
	}
}

func (w *callWatch) flush(c *watchedCall) {
	delete(w.calls, c.key)
	for _, r := range c.replies {
		if w.byReply[r] == c {
			delete(w.byReply, r)
		}
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
		default:
			rec.NoResp++
		}
	}
	sort.SliceStable(rec.Outcomes, func(i, j int) bool { return rec.Outcomes[i].Machine < rec.Outcomes[j].Machine })
	for _, h := range w.hooks {
		h(rec)
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
// the audit log is its first hook.
func (s *Service) watchCalls() error {
	s.mu.Lock()
	hooks := append([]CallHook{func(rec fleet.AuditRecord) {
		for _, p := range splitCallRecord(rec) {
			s.audit.record(p)
		}
	}}, s.callHooks...)
	s.mu.Unlock()
	w := newCallWatch(s.calls, s.log.With("component", "callwatch"), s.reg, s.presence, s.cfg.CallWait, hooks)
	if err := w.start(); err != nil {
		return fmt.Errorf("watch calls: %w", err)
	}
	s.closers = append(s.closers, w.stop)
	return nil
}

// isOpen reports whether target o has had no answer yet.
func isOpen(o *fleet.AuditOutcome) bool {
	return o.Status == fleet.OutcomeNoResponse && o.Code == 0
}

// isOffline reports whether o was settled by a "no responders" answer.
func isOffline(o *fleet.AuditOutcome) bool {
	return o.Status == fleet.OutcomeNoResponse && o.Code == fleet.CodeUnavailable
}
