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
// gathers them into one.
func (c *Client) Snapshot(ctx context.Context) (*fleet.PresenceSnapshot, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	inbox := c.nc.NewRespInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("presence snapshot: %w", err)
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)
	if err := c.nc.PublishRequest(fleet.PresenceSnapshotSubject, inbox, nil); err != nil {
		return nil, fmt.Errorf("presence snapshot: %w", err)
	}
	var snap *fleet.PresenceSnapshot
	for got := 0; snap == nil || got < snap.Parts; got++ {
		msg, err := sub.NextMsgWithContext(ctx)
		// NextMsg reports the broker's "no responders" status as an error.
		if errors.Is(err, nats.ErrNoResponders) || err == nil && isNoResponders(msg) {
			return nil, fmt.Errorf("%w on %s: is cc-control running?", ErrNoService, fleet.PresenceSnapshotSubject)
		}
		if err != nil {
			return nil, fmt.Errorf("presence snapshot: no complete reply in time: %w", err)
		}
		var part fleet.PresenceSnapshot
		if err := json.Unmarshal(msg.Data, &part); err != nil {
			return nil, fmt.Errorf("presence snapshot: malformed reply: %w", err)
		}
		if snap == nil {
			snap = &part
			continue
		}
		if part.Seq != snap.Seq || part.Epoch != snap.Epoch {
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
