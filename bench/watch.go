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

// Event names [Client.Watch] adds to the live [fleet.EventJoined] and
// [fleet.EventLeft]. EventSynced, EventStale and EventResync name no machine.
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
// (sorted by id), then one [EventSynced], then live [fleet.EventJoined] and
// [fleet.EventLeft] events in order. Nothing is missed or repeated between
// the list and the live events: Watch subscribes to the events before it
// asks for the snapshot and drops the events the snapshot already holds.
//
// Watch notices whenever it may have missed events — a jump in the events'
// sequence numbers, its connection lost and re-established (a broker
// restart, credentials that expired and were renewed, a process stopped
// for longer than the broker's ping limit), events dropped because fn fell
// behind — and resynchronises: fn gets an [EventResync] saying why, then a
// left or joined event ([FoundByResync]) for each machine whose state
// changed meanwhile, then an [EventSynced]. A caller that folds present,
// joined and left into a set holds the control service's ONLINE list after
// every EventSynced. While the connection is down fn gets one [EventStale].
//
// fn runs on Watch's goroutine; a slow fn delays events, and past the
// subscription's buffer costs a resync. Watch returns ctx.Err() when ctx
// ends, or the error that stopped it: the first snapshot failed, or the
// connection closed for good (reconnection refused or given up).
func (c *Client) Watch(ctx context.Context, fn func(fleet.PresenceEvent)) error {
	nc := c.nc
	status := nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)
	defer nc.RemoveStatusListener(status)
	w := &watcher{c: c, fn: fn, status: status, online: map[string]map[string]string{}, reconnects: nc.Stats().Reconnects}
	sub, err := nc.SubscribeSync(fleet.PresenceEventsWildcard)
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
	snap, err := c.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	for _, s := range snap.Servers {
		w.online[s.Machine] = s.Labels
		fn(fleet.PresenceEvent{Event: EventPresent, Machine: s.Machine, Labels: s.Labels, Time: s.Since, Seq: snap.Seq})
	}
	w.last, w.epoch = snap.Seq, snap.Epoch
	fn(fleet.PresenceEvent{Event: EventSynced, Time: snap.Time, Seq: snap.Seq})

	rctx, stop := context.WithCancel(ctx)
	msgs := make(chan delivery)
	done := make(chan struct{})
	go func() { defer close(done); readEvents(rctx, sub, msgs) }()
	defer func() { stop(); <-done }()
	return w.loop(ctx, msgs)
}

// watcher is the state of one Watch: what fn has been told.
type watcher struct {
	c      *Client
	fn     func(fleet.PresenceEvent)
	status chan nats.Status
	// online holds the machines fn was told are ONLINE, with their labels.
	online map[string]map[string]string
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

func (w *watcher) loop(ctx context.Context, msgs <-chan delivery) error {
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
func (w *watcher) connChanged(ctx context.Context) error {
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

func (w *watcher) deliver(ctx context.Context, d delivery) error {
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
	var ev fleet.PresenceEvent
	if err := json.Unmarshal(d.msg.Data, &ev); err != nil || ev.Machine == "" {
		return nil // not an event we understand; a newer control service?
	}
	switch {
	case ev.Epoch != w.epoch:
		// Numbered by another run of the control service (one restarted
		// without its saved state, or a second one): seq says nothing.
		return w.resync(ctx, "the control service's event numbering changed (restarted or replaced)")
	case ev.Seq <= w.last:
		return nil // already folded into the snapshot
	case ev.Seq != w.last+1:
		return w.resync(ctx, fmt.Sprintf("sequence gap %d→%d", w.last, ev.Seq))
	}
	w.last = ev.Seq
	switch ev.Event {
	case fleet.EventJoined:
		w.online[ev.Machine] = ev.Labels
	case fleet.EventLeft:
		delete(w.online, ev.Machine)
	}
	w.fn(ev)
	return nil
}

// resync reads a fresh snapshot and reports what changed since fn's view.
// Events the subscription holds or receives meanwhile are sorted out by
// their sequence numbers afterwards, as at the start of the watch.
func (w *watcher) resync(ctx context.Context, reason string) error {
	w.fn(fleet.PresenceEvent{Event: EventResync, Reason: reason, Time: time.Now().UTC(), Seq: w.last})
	snap, err := w.freshSnapshot(ctx)
	if err != nil {
		return err
	}
	w.stale = false
	_ = w.c.errs.takeLost() // the drop, if any, is dealt with
	now := make(map[string]bool, len(snap.Servers))
	for _, s := range snap.Servers {
		now[s.Machine] = true
	}
	var gone []string
	for id := range w.online {
		if !now[id] {
			gone = append(gone, id)
		}
	}
	sort.Strings(gone)
	for _, id := range gone {
		labels := w.online[id]
		delete(w.online, id)
		w.fn(fleet.PresenceEvent{Event: fleet.EventLeft, Machine: id, Labels: labels, Time: snap.Time, Seq: snap.Seq, Reason: FoundByResync})
	}
	for _, s := range snap.Servers {
		_, had := w.online[s.Machine]
		w.online[s.Machine] = s.Labels
		if !had {
			w.fn(fleet.PresenceEvent{Event: fleet.EventJoined, Machine: s.Machine, Labels: s.Labels, Time: s.Since, Seq: snap.Seq, Reason: FoundByResync})
		}
	}
	w.last, w.epoch = snap.Seq, snap.Epoch
	w.fn(fleet.PresenceEvent{Event: EventSynced, Time: snap.Time, Seq: snap.Seq})
	return nil
}

// freshSnapshot reads the snapshot once the connection is up, retrying
// (and saying so) until it succeeds, ctx ends or the connection closes.
func (w *watcher) freshSnapshot(ctx context.Context) (*fleet.PresenceSnapshot, error) {
	wait := 250 * time.Millisecond
	for {
		if err := w.awaitConnected(ctx); err != nil {
			return nil, err
		}
		w.reconnects = w.c.nc.Stats().Reconnects
		snap, err := w.c.Snapshot(ctx)
		switch {
		case err == nil:
			return snap, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case w.c.nc.IsClosed():
			return nil, w.closedErr()
		}
		w.stale = true
		w.fn(fleet.PresenceEvent{Event: EventStale, Time: time.Now().UTC(), Seq: w.last,
			Reason: fmt.Sprintf("resync failed (%v); retrying in %s", err, wait)})
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
func (w *watcher) awaitConnected(ctx context.Context) error {
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

func (w *watcher) markStale(reason string) {
	if w.stale {
		return
	}
	w.stale = true
	w.fn(fleet.PresenceEvent{Event: EventStale, Reason: reason, Time: time.Now().UTC(), Seq: w.last})
}

func (w *watcher) lostReason() string {
	err := w.c.errs.takeLost()
	if err == nil {
		err = w.c.nc.LastError()
	}
	if err != nil {
		return "connection to the broker lost (" + err.Error() + "); reconnecting"
	}
	return "connection to the broker lost; reconnecting"
}

func (w *watcher) closedErr() error {
	if err := w.c.nc.LastError(); err != nil {
		return fmt.Errorf("watch: %w (%v): start the watch again (if the broker refuses the key, is it still registered as an operator?)", nats.ErrConnectionClosed, err)
	}
	return fmt.Errorf("watch: %w: start the watch again", nats.ErrConnectionClosed)
}
