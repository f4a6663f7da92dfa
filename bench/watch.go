package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Event names [Client.Watch] adds to the live [fleet.EventJoined],
// [fleet.EventLeft] and [fleet.EventUpdated]. EventSynced, EventStale and
// EventResync name no machine.
const (
	// EventPresent marks a machine that was ONLINE when the watch started
	// (from the presence snapshot); its Time is when it came online.
	EventPresent = "present"
	// EventSynced follows the last EventPresent, and ends every resync:
	// the list is complete and live events follow. Seq is the snapshot's.
	EventSynced = "synced"
	// EventStale says the watch's connection to the broker is lost (or a
	// resync could not read the snapshot): changes may be missed, and the
	// list is out of date until the EventResync that follows. Reason says
	// what happened.
	EventStale = "stale"
	// EventResync says the watch may have missed events and reads a fresh
	// snapshot; Reason says why ("sequence gap 71→90", "reconnected to the
	// broker", "events dropped: …"). A left or joined event, Reason
	// [FoundByResync], follows for every machine whose state differs from
	// what the watch had reported, then an EventSynced.
	EventResync = "resync"
)

// FoundByResync is the Reason of the joined and left events a resync
// reports: the change happened while the watch was out of step.
const FoundByResync = "found by resync"

// watchPendingBytes bounds the events a watch holds unread before it drops
// them (and resyncs). Tests lower it.
var watchPendingBytes = 256 << 20

// resyncRetryMax bounds the wait between two attempts at a resync snapshot.
const resyncRetryMax = 10 * time.Second

// Watch calls fn with the current list of ONLINE machines, then with every
// presence change until ctx ends: first one [EventPresent] per machine
// (sorted by id), then one [EventSynced], then live [fleet.EventJoined],
// [fleet.EventLeft] and [fleet.EventUpdated] (an ONLINE machine's agent
// reported new facts: the event carries them) events in order. Present,
// joined and updated events carry the machine's facts, and a left event
// the facts the watch knew of it. Nothing is missed or repeated between
// the list and the live events: Watch subscribes to the events before it
// asks for the snapshot and drops the events the snapshot already holds.
//
// Watch notices whenever it may have missed events — a jump in the events'
// sequence numbers, its connection lost and re-established (a broker
// restart, credentials that expired and were renewed, a process stopped
// for longer than the broker's ping limit), events dropped because fn fell
// behind — and resynchronises: fn gets an [EventResync] saying why, then a
// left or joined event ([FoundByResync]) for each machine whose state
// changed meanwhile (updated for one whose facts changed), then an
// [EventSynced]. A caller that folds present,
// joined and left into a set holds the control service's ONLINE list after
// every EventSynced. While the connection is down fn gets one [EventStale].
//
// fn runs on Watch's goroutine; a slow fn delays events, and past the
// subscription's buffer costs a resync. Watch returns ctx.Err() when ctx
// ends, or the error that stopped it: the first snapshot failed, or the
// connection closed for good (reconnection refused or given up).
func (c *Client) Watch(ctx context.Context, fn func(fleet.PresenceEvent)) error {
	return watch(ctx, c, machineWatch, fn)
}

// WatchSessions is [Client.Watch] for sessions: fn gets one
// [EventPresent] per ONLINE session (sorted by id), an [EventSynced], then
// live [fleet.EventJoined] and [fleet.EventLeft] session events, with the
// same resyncs on gaps, a changed epoch, reconnects and drops (session
// events are numbered apart from the machines'). The events of
// [EventSynced], [EventStale] and [EventResync] name no session. It needs
// an admin, or a viewer with the sessions permission.
func (c *Client) WatchSessions(ctx context.Context, fn func(fleet.SessionEvent)) error {
	return watch(ctx, c, sessionWatch, fn)
}

// watchKind says how a watch reads one kind of presence: E is its event,
// T what its snapshot lists (a machine, a session).
type watchKind[E, T any] struct {
	subject  string // the live events' wildcard
	snapshot func(ctx context.Context, c *Client) (*watchSnap[T], error)
	id       func(T) string
	since    func(T) time.Time
	// decode reads a live event: its name, item, seq and epoch; ok is
	// false for one it does not understand (a newer control service?).
	decode func(data []byte) (ev E, name string, item T, seq uint64, epoch string, ok bool)
	// event makes a present, joined or left event about item.
	event func(name string, item T, t time.Time, seq uint64, reason string) E
	// note makes a synced, stale or resync event, which names no item.
	note func(name string, t time.Time, seq uint64, reason string) E
	// updated, when not nil, reports whether now differs from was in
	// what an updated event reports (a resync then makes one); left
	// completes a live left event with what the watch knew of its item.
	updated func(was, now T) bool
	left    func(ev E, item T) E
}

// watchSnap is a snapshot as a watch folds it in.
type watchSnap[T any] struct {
	seq   uint64
	epoch string
	time  time.Time
	items []T
}

var machineWatch = &watchKind[fleet.PresenceEvent, fleet.Server]{
	subject: fleet.PresenceEventsWildcard,
	snapshot: func(ctx context.Context, c *Client) (*watchSnap[fleet.Server], error) {
		snap, err := c.Snapshot(ctx)
		if err != nil {
			return nil, err
		}
		return &watchSnap[fleet.Server]{seq: snap.Seq, epoch: snap.Epoch, time: snap.Time, items: snap.Servers}, nil
	},
	id:    func(s fleet.Server) string { return s.Machine },
	since: func(s fleet.Server) time.Time { return s.Since },
	decode: func(data []byte) (fleet.PresenceEvent, string, fleet.Server, uint64, string, bool) {
		var ev fleet.PresenceEvent
		if err := json.Unmarshal(data, &ev); err != nil || ev.Machine == "" {
			return ev, "", fleet.Server{}, 0, "", false
		}
		return ev, ev.Event, fleet.Server{Machine: ev.Machine, Labels: ev.Labels, Facts: ev.Facts}, ev.Seq, ev.Epoch, true
	},
	event: func(name string, s fleet.Server, t time.Time, seq uint64, reason string) fleet.PresenceEvent {
		return fleet.PresenceEvent{Event: name, Machine: s.Machine, Labels: s.Labels, Time: t, Seq: seq, Reason: reason, Facts: s.Facts}
	},
	note: func(name string, t time.Time, seq uint64, reason string) fleet.PresenceEvent {
		return fleet.PresenceEvent{Event: name, Time: t, Seq: seq, Reason: reason}
	},
	updated: func(was, now fleet.Server) bool { return !fleet.FactsEqual(was.Facts, now.Facts) },
	left: func(ev fleet.PresenceEvent, s fleet.Server) fleet.PresenceEvent {
		if ev.Facts == nil {
			ev.Facts = s.Facts
		}
		return ev
	},
}

var sessionWatch = &watchKind[fleet.SessionEvent, fleet.Session]{
	subject: fleet.SessionEventsWildcard,
	snapshot: func(ctx context.Context, c *Client) (*watchSnap[fleet.Session], error) {
		snap, err := c.SessionSnapshot(ctx, fleet.SessionQuery{})
		if err != nil {
			return nil, err
		}
		return &watchSnap[fleet.Session]{seq: snap.Seq, epoch: snap.Epoch, time: snap.Time, items: snap.Sessions}, nil
	},
	id:    func(s fleet.Session) string { return s.ID },
	since: func(s fleet.Session) time.Time { return s.Since },
	decode: func(data []byte) (fleet.SessionEvent, string, fleet.Session, uint64, string, bool) {
		var ev fleet.SessionEvent
		if err := json.Unmarshal(data, &ev); err != nil || fleet.ValidateSessionID(ev.Session.ID) != nil {
			return ev, "", fleet.Session{}, 0, "", false
		}
		return ev, ev.Event, ev.Session, ev.Seq, ev.Epoch, true
	},
	event: func(name string, s fleet.Session, t time.Time, seq uint64, reason string) fleet.SessionEvent {
		return fleet.SessionEvent{Event: name, Session: s, Time: t, Seq: seq, Reason: reason}
	},
	note: func(name string, t time.Time, seq uint64, reason string) fleet.SessionEvent {
		return fleet.SessionEvent{Event: name, Time: t, Seq: seq, Reason: reason}
	},
}

func watch[E, T any](ctx context.Context, c *Client, kind *watchKind[E, T], fn func(E)) error {
	nc := c.nc
	status := nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)
	defer nc.RemoveStatusListener(status)
	w := &watcher[E, T]{c: c, kind: kind, fn: fn, status: status, online: map[string]T{}, reconnects: nc.Stats().Reconnects}
	sub, err := nc.SubscribeSync(kind.subject)
	if err != nil {
		return fmt.Errorf("watch: subscribe to presence events: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, watchPendingBytes)
	fctx, cancel := withTimeout(ctx)
	err = nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	snap, err := kind.snapshot(ctx, c)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	for _, s := range snap.items {
		w.online[kind.id(s)] = s
		fn(kind.event(EventPresent, s, kind.since(s), snap.seq, ""))
	}
	w.last, w.epoch = snap.seq, snap.epoch
	fn(kind.note(EventSynced, snap.time, snap.seq, ""))

	rctx, stop := context.WithCancel(ctx)
	msgs := make(chan delivery)
	done := make(chan struct{})
	go func() { defer close(done); readEvents(rctx, sub, msgs) }()
	defer func() { stop(); <-done }()
	return w.loop(ctx, msgs)
}

// watcher is the state of one Watch: what fn has been told.
type watcher[E, T any] struct {
	c      *Client
	kind   *watchKind[E, T]
	fn     func(E)
	status chan nats.Status
	// online holds what fn was told is ONLINE, by id.
	online map[string]T
	// last is the sequence number of the last event folded in, epoch
	// the numbering it belongs to.
	last  uint64
	epoch string
	// reconnects is the connection's reconnect count when the list was
	// last read: a higher count means events may have been lost.
	reconnects uint64
	// stale is set once fn was told the connection is lost, until a resync.
	stale bool
}

// delivery is one result of reading the event subscription.
type delivery struct {
	msg *nats.Msg
	err error
}

// readEvents hands the subscription's messages (and its errors, which end
// it but for a slow-consumer report) to out until ctx ends.
func readEvents(ctx context.Context, sub *nats.Subscription, out chan<- delivery) {
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if ctx.Err() != nil {
			return
		}
		select {
		case out <- delivery{msg, err}:
		case <-ctx.Done():
			return
		}
		if err != nil && !errors.Is(err, nats.ErrSlowConsumer) {
			return
		}
	}
}

func (w *watcher[E, T]) loop(ctx context.Context, msgs <-chan delivery) error {
	for {
		var err error
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.status:
			err = w.connChanged(ctx)
		case d := <-msgs:
			err = w.deliver(ctx, d)
		}
		if err != nil {
			return err
		}
	}
}

// connChanged reacts to the connection's state: lost is reported once,
// re-established resyncs, closed ends the watch.
func (w *watcher[E, T]) connChanged(ctx context.Context) error {
	nc := w.c.nc
	switch {
	case nc.IsClosed():
		return w.closedErr()
	case !nc.IsConnected():
		w.markStale(w.lostReason())
	case nc.Stats().Reconnects != w.reconnects:
		return w.resync(ctx, "reconnected to the broker")
	}
	return nil
}

func (w *watcher[E, T]) deliver(ctx context.Context, d delivery) error {
	if d.err != nil {
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(d.err, nats.ErrSlowConsumer):
			return w.resync(ctx, "events dropped: the watcher fell behind")
		case errors.Is(d.err, nats.ErrConnectionClosed):
			return w.closedErr()
		}
		return fmt.Errorf("watch: %w", d.err)
	}
	ev, name, item, seq, epoch, ok := w.kind.decode(d.msg.Data)
	if !ok {
		return nil // not an event we understand; a newer control service?
	}
	switch {
	case epoch != w.epoch:
		// Numbered by another run of the control service (one restarted
		// without its saved state, or a second one): seq says nothing.
		return w.resync(ctx, "the control service's event numbering changed (restarted or replaced)")
	case seq <= w.last:
		return nil // already folded into the snapshot
	case seq != w.last+1:
		return w.resync(ctx, fmt.Sprintf("sequence gap %d→%d", w.last, seq))
	}
	w.last = seq
	switch name {
	case fleet.EventJoined:
		w.online[w.kind.id(item)] = item
	case fleet.EventUpdated:
		if _, ok := w.online[w.kind.id(item)]; ok {
			w.online[w.kind.id(item)] = item
		}
	case fleet.EventLeft:
		if was, ok := w.online[w.kind.id(item)]; ok && w.kind.left != nil {
			ev = w.kind.left(ev, was)
		}
		delete(w.online, w.kind.id(item))
	}
	w.fn(ev)
	return nil
}

// resync reads a fresh snapshot and reports what changed since fn's view.
// Events the subscription holds or receives meanwhile are sorted out by
// their sequence numbers afterwards, as at the start of the watch.
func (w *watcher[E, T]) resync(ctx context.Context, reason string) error {
	k := w.kind
	w.fn(k.note(EventResync, time.Now().UTC(), w.last, reason))
	snap, err := w.freshSnapshot(ctx)
	if err != nil {
		return err
	}
	w.stale = false
	_ = w.c.errs.takeLost() // the drop, if any, is dealt with
	now := make(map[string]bool, len(snap.items))
	for _, s := range snap.items {
		now[k.id(s)] = true
	}
	var gone []string
	for id := range w.online {
		if !now[id] {
			gone = append(gone, id)
		}
	}
	sort.Strings(gone)
	for _, id := range gone {
		item := w.online[id]
		delete(w.online, id)
		w.fn(k.event(fleet.EventLeft, item, snap.time, snap.seq, FoundByResync))
	}
	for _, s := range snap.items {
		id := k.id(s)
		was, had := w.online[id]
		w.online[id] = s
		switch {
		case !had:
			w.fn(k.event(fleet.EventJoined, s, k.since(s), snap.seq, FoundByResync))
		case k.updated != nil && k.updated(was, s):
			w.fn(k.event(fleet.EventUpdated, s, snap.time, snap.seq, FoundByResync))
		}
	}
	w.last, w.epoch = snap.seq, snap.epoch
	w.fn(k.note(EventSynced, snap.time, snap.seq, ""))
	return nil
}

// freshSnapshot reads the snapshot once the connection is up, retrying
// (and saying so) until it succeeds, ctx ends or the connection closes.
func (w *watcher[E, T]) freshSnapshot(ctx context.Context) (*watchSnap[T], error) {
	wait := 250 * time.Millisecond
	for {
		if err := w.awaitConnected(ctx); err != nil {
			return nil, err
		}
		w.reconnects = w.c.nc.Stats().Reconnects
		snap, err := w.kind.snapshot(ctx, w.c)
		switch {
		case err == nil:
			return snap, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case w.c.nc.IsClosed():
			return nil, w.closedErr()
		}
		w.stale = true
		w.fn(w.kind.note(EventStale, time.Now().UTC(), w.last, fmt.Sprintf("resync failed (%v); retrying in %s", err, wait)))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, resyncRetryMax)
	}
}

// awaitConnected returns once the connection is up, reporting it stale
// while it is not.
func (w *watcher[E, T]) awaitConnected(ctx context.Context) error {
	nc := w.c.nc
	for !nc.IsConnected() {
		if nc.IsClosed() {
			return w.closedErr()
		}
		w.markStale(w.lostReason())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.status:
		}
	}
	return nil
}

func (w *watcher[E, T]) markStale(reason string) {
	if w.stale {
		return
	}
	w.stale = true
	w.fn(w.kind.note(EventStale, time.Now().UTC(), w.last, reason))
}

func (w *watcher[E, T]) lostReason() string {
	err := w.c.errs.takeLost()
	if err == nil {
		err = w.c.nc.LastError()
	}
	if err != nil {
		return "connection to the broker lost (" + err.Error() + "); reconnecting"
	}
	return "connection to the broker lost; reconnecting"
}

func (w *watcher[E, T]) closedErr() error {
	if err := w.c.nc.LastError(); err != nil {
		return fmt.Errorf("watch: %w (%v): start the watch again (if the broker refuses the key, is it still registered as an operator?)", nats.ErrConnectionClosed, err)
	}
	return fmt.Errorf("watch: %w: start the watch again", nats.ErrConnectionClosed)
}
