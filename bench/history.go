package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// HistoryOptions choose the joins and leaves [Client.History] reads.
type HistoryOptions struct {
	// Since and Until bound the entries' times: at or after Since,
	// before Until (zero: unbounded).
	Since, Until time.Time
	// Machine reads one machine's entries only ("": every machine's).
	Machine string
	// Where keeps the entries whose machine, with the labels it had at
	// the time of the entry, it selects (zero: all).
	Where Selector
	// Limit bounds the entries returned (0: all, paging through as many
	// replies as that takes).
	Limit int
	// Newest reads newest first (default oldest first).
	Newest bool
}

// History is what [Client.History] read.
type History struct {
	Entries []fleet.HistoryEntry
	// More is set when Limit cut the entries short.
	More bool
	// Oldest is the time of the oldest entry the service still keeps
	// (zero: none); Retention how long it keeps them. Entries before
	// Oldest are gone, not missing.
	Oldest    time.Time
	Retention time.Duration
	// Trimmed is set once older entries have been deleted (past the
	// retention or the history's size).
	Trimmed bool
	// PerMachine is how many joins, and leaves, the service keeps of one
	// machine; MachineTrimmed, for HistoryOptions.Machine, says that
	// machine reached it: its older ones are gone.
	PerMachine     int64
	MachineTrimmed bool
}

// History reads the machines' joins and leaves (any operator), with the
// broker's reason for each leave (client closed, kicked, stale
// connection, …): what went down overnight, and since when.
func (c *Client) History(ctx context.Context, opts HistoryOptions) (*History, error) {
	if opts.Limit < 0 {
		return nil, fmt.Errorf("history: limit %d is negative; give 0 for all", opts.Limit)
	}
	if opts.Machine != "" {
		if err := fleet.ValidateMachineID(opts.Machine); err != nil {
			return nil, fmt.Errorf("history: %w", err)
		}
	}
	out := &History{Entries: []fleet.HistoryEntry{}}
	req := fleet.HistoryRequest{Since: opts.Since, Until: opts.Until, Machine: opts.Machine, Newest: opts.Newest}
	for {
		// A selector filters here, so the pages are asked at full size.
		req.Limit = fleet.HistoryMaxLimit
		if opts.Limit > 0 && opts.Where.Empty() {
			req.Limit = min(opts.Limit-len(out.Entries), fleet.HistoryMaxLimit)
		}
		var p fleet.HistoryPage
		if err := c.Control(ctx, fleet.OpHistory, req, &p); err != nil {
			return out, err
		}
		out.Oldest, out.Retention, out.Trimmed = p.Oldest, time.Duration(p.RetentionSeconds)*time.Second, p.Trimmed
		out.PerMachine, out.MachineTrimmed = p.PerMachine, p.MachineTrimmed
		for _, e := range p.Entries {
			if !opts.Where.Match(e.Machine, e.Labels) {
				continue
			}
			if opts.Limit > 0 && len(out.Entries) == opts.Limit {
				out.More = true
				return out, nil
			}
			out.Entries = append(out.Entries, e)
		}
		if !p.More || p.Cursor == 0 || p.Cursor == req.Cursor {
			return out, nil
		}
		if opts.Limit > 0 && len(out.Entries) >= opts.Limit {
			out.More = true
			return out, nil
		}
		req.Cursor = p.Cursor
	}
}
