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
	return c.snapshotOf(ctx, false)
}

// onlineIDs returns the ids of the machines ONLINE now, sorted, asking
// the control service for the ids alone (fleet.SnapshotRequest): what a
// call to every ONLINE machine needs, without the bytes and decoding of
// every machine's labels and facts. A control service that predates
// that request answers the whole snapshot, whose ids are then taken.
func (c *Client) onlineIDs(ctx context.Context) ([]string, error) {
	snap, err := c.snapshotOf(ctx, true)
	if err != nil {
		return nil, err
	}
	return snap.Machines, nil
}

// snapshotOf is Snapshot, or with ids the snapshot of ids: Machines
// filled and sorted, Servers nil.
func (c *Client) snapshotOf(ctx context.Context, ids bool) (*fleet.PresenceSnapshot, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	subject := fleet.PresenceSnapshotSubject
	if c.key != "" {
		subject = fleet.CtlSubject(c.key, fleet.OpPresenceSnapshot)
	}
	for {
		snap, err := c.snapshot(ctx, subject, ids)
		switch {
		case errors.Is(err, ErrNoService) && subject != fleet.PresenceSnapshotSubject:
			subject = fleet.PresenceSnapshotSubject // an older control service
		case !waitToRetry(ctx, err):
			return snap, err
		}
	}
}

// idsRequest is the body of a snapshot request for the ids alone.
var idsRequest, _ = json.Marshal(fleet.SnapshotRequest{IDs: true})

func (c *Client) snapshot(ctx context.Context, subject string, ids bool) (*fleet.PresenceSnapshot, error) {
	inbox := c.nc.NewRespInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("presence snapshot: %w", err)
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)
	var body []byte
	if ids {
		body = idsRequest
	}
	if err := c.nc.PublishRequest(subject, inbox, body); err != nil {
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
		keepIDs(&part, ids)
		if snap == nil {
			snap = &part
			continue
		}
		if part.Seq != snap.Seq || part.Epoch != snap.Epoch {
			return nil, fmt.Errorf("presence snapshot: parts of different snapshots (seq %d and %d)", snap.Seq, part.Seq)
		}
		snap.Servers = append(snap.Servers, part.Servers...)
		snap.Machines = append(snap.Machines, part.Machines...)
	}
	if ids {
		sort.Strings(snap.Machines)
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

// keepIDs leaves in part, a reply to a snapshot request, the ids alone
// when ids was asked (an older control service answers the whole
// snapshot: its servers' ids are taken), else the servers alone.
func keepIDs(part *fleet.PresenceSnapshot, ids bool) {
	if !ids {
		part.Machines = nil
		return
	}
	for _, sv := range part.Servers {
		part.Machines = append(part.Machines, sv.Machine)
	}
	part.Servers = nil
}
