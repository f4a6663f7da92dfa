package bench

import (
	"context"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Audit reads the audit log (admin only): calls with their outcome per
// target, registry changes and refused connections, oldest first, from
// since (zero: from the start), at most limit records (0: all, paging
// through as many replies as that takes).
func (c *Client) Audit(ctx context.Context, since time.Time, limit int) ([]fleet.AuditRecord, error) {
	var out []fleet.AuditRecord
	req := fleet.AuditRequest{Since: since}
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
		if !l.More || len(l.Records) == 0 || (limit > 0 && len(out) >= limit) {
			return out, nil
		}
		req.AfterSeq, req.Since = l.Records[len(l.Records)-1].Seq, time.Time{}
	}
	return out, nil
}
