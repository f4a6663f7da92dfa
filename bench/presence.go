package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Event names [Client.Watch] adds to the live [fleet.EventJoined] and
// [fleet.EventLeft].
const (
	// EventPresent marks a machine that was ONLINE when the watch started
	// (from the presence snapshot); its Time is when it came online.
	EventPresent = "present"
	// EventSynced follows the last EventPresent: the current list is
	// complete and live events follow. It names no machine.
	EventSynced = "synced"
)

// Snapshot asks the control service who is ONLINE now. A large fleet's
// list arrives in parts ([fleet.PresenceSnapshot.Parts]); Snapshot
// gathers them into one. It asks on the operator's own control subject
// (fleet.OpPresenceSnapshot), within the operator's snapshot limit: past
// it Snapshot waits as long as the service says and asks again, when ctx
// leaves room for that; else the error wraps a *fleet.Error with code 429
// saying when to retry. A
// client without a key, or a control service that predates the control
// subject, is asked on [fleet.PresenceSnapshotSubject].
func (c *Client) Snapshot(ctx context.Context) (*fleet.PresenceSnapshot, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	subject := fleet.PresenceSnapshotSubject
	if c.key != "" {
		subject = fleet.CtlSubject(c.key, fleet.OpPresenceSnapshot)
	}
	for {
		snap, err := c.snapshot(ctx, subject)
		switch {
		case errors.Is(err, ErrNoService) && subject != fleet.PresenceSnapshotSubject:
			subject = fleet.PresenceSnapshotSubject // an older control service
		case !waitToRetry(ctx, err):
			return snap, err
		}
	}
}

func (c *Client) snapshot(ctx context.Context, subject string) (*fleet.PresenceSnapshot, error) {
	inbox := c.nc.NewRespInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("presence snapshot: %w", err)
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)
	if err := c.nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, fmt.Errorf("presence snapshot: %w", err)
	}
	var snap *fleet.PresenceSnapshot
	for got := 0; snap == nil || got < snap.Parts; got++ {
		msg, err := sub.NextMsgWithContext(ctx)
		// NextMsg reports the broker's "no responders" status as an error.
		if errors.Is(err, nats.ErrNoResponders) || err == nil && isNoResponders(msg) {
			return nil, fmt.Errorf("%w on %s: is cc-control running?", ErrNoService, subject)
		}
		if err != nil {
			return nil, fmt.Errorf("presence snapshot: no complete reply in time: %w", err)
		}
		if err := replyErr(msg); err != nil {
			return nil, fmt.Errorf("presence snapshot: %w", err)
		}
		var part fleet.PresenceSnapshot
		if err := json.Unmarshal(msg.Data, &part); err != nil {
			return nil, fmt.Errorf("presence snapshot: malformed reply: %w", err)
		}
		if snap == nil {
			snap = &part
			continue
		}
		if part.Seq != snap.Seq {
			return nil, fmt.Errorf("presence snapshot: parts of different snapshots (seq %d and %d)", snap.Seq, part.Seq)
		}
		snap.Servers = append(snap.Servers, part.Servers...)
	}
	sort.Slice(snap.Servers, func(i, j int) bool { return snap.Servers[i].Machine < snap.Servers[j].Machine })
	snap.Part, snap.Parts = 0, 0
	return snap, nil
}

// Servers lists the ONLINE machines sel selects, sorted by machine id. The
// zero Selector selects every machine.
func (c *Client) Servers(ctx context.Context, sel Selector) ([]fleet.Server, error) {
	snap, err := c.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	return sel.Filter(snap.Servers), nil
}

// Watch calls fn with the current list of ONLINE machines, then with every
// presence change until ctx ends: first one [EventPresent] per machine
// (sorted by id), then one [EventSynced], then live [fleet.EventJoined] and
// [fleet.EventLeft] events in order. Nothing is missed or repeated between
// the list and the live events: Watch subscribes to the events before it
// asks for the snapshot and drops the events the snapshot already holds.
//
// fn runs on Watch's goroutine; a slow fn delays, but does not lose, events
// (up to the subscription's buffer, after which Watch fails rather than
// skip). Watch returns ctx.Err() when ctx ends, or the error that stopped it.
func (c *Client) Watch(ctx context.Context, fn func(fleet.PresenceEvent)) error {
	sub, err := c.nc.SubscribeSync(fleet.PresenceEventsWildcard)
	if err != nil {
		return fmt.Errorf("watch: subscribe to presence events: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, 256<<20)
	fctx, cancel := withTimeout(ctx)
	err = c.nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	snap, err := c.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	servers := append([]fleet.Server(nil), snap.Servers...)
	sort.Slice(servers, func(i, j int) bool { return servers[i].Machine < servers[j].Machine })
	for _, s := range servers {
		fn(fleet.PresenceEvent{Event: EventPresent, Machine: s.Machine, Labels: s.Labels, Time: s.Since, Seq: snap.Seq})
	}
	fn(fleet.PresenceEvent{Event: EventSynced, Time: snap.Time, Seq: snap.Seq})
	return watchLive(ctx, sub, snap.Seq, fn)
}

func watchLive(ctx context.Context, sub *nats.Subscription, after uint64, fn func(fleet.PresenceEvent)) error {
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, nats.ErrSlowConsumer) {
				return fmt.Errorf("watch: presence events were dropped (the handler is too slow): %w", err)
			}
			return fmt.Errorf("watch: %w", err)
		}
		var ev fleet.PresenceEvent
		if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Machine == "" {
			continue // not an event we understand; a newer control service?
		}
		if ev.Seq <= after {
			continue // already folded into the snapshot
		}
		fn(ev)
	}
}
