package bench

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Audit reads the audit log (admin only): calls with their outcome per
// target, registry changes, refused connections and notes of lost
// records, oldest first, from since (zero: from the start), at most limit
// records (0: all, paging through as many replies as that takes), of the
// logs named (fleet.AuditLogChanges, …; none: all of them).
func (c *Client) Audit(ctx context.Context, since time.Time, limit int, logs ...string) ([]fleet.AuditRecord, error) {
	var out []fleet.AuditRecord
	req := fleet.AuditRequest{Since: since, Logs: logs}
	for page := 0; page < 100000; page++ {
		req.Limit = 0
		if limit > 0 {
			req.Limit = limit - len(out)
		}
		var l fleet.AuditList
		if err := c.Control(ctx, fleet.OpAudit, req, &l); err != nil {
			return out, err
		}
		out = append(out, l.Records...)
		// A page may hold no record but move on (records before since).
		if !l.More || (len(l.Records) == 0 && maps.Equal(l.Next, req.After)) || (limit > 0 && len(out) >= limit) {
			return out, nil
		}
		req.After = l.Next
	}
	return out, nil
}

// AuditNewest reads the newest limit records (limit 1 to 10,000) of the
// audit logs named (none: all) from since (zero: from the start), oldest
// first, in one request; older reports that older records match too.
func (c *Client) AuditNewest(ctx context.Context, since time.Time, limit int, logs ...string) (recs []fleet.AuditRecord, older bool, err error) {
	if limit <= 0 {
		return nil, false, fmt.Errorf("%s: the newest records need a limit above 0", fleet.OpAudit)
	}
	var l fleet.AuditList
	if err := c.Control(ctx, fleet.OpAudit, fleet.AuditRequest{Since: since, Logs: logs, Limit: limit, Newest: true}, &l); err != nil {
		return nil, false, err
	}
	return l.Records, l.More, nil
}
