package cli

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

var auditHelp = help{
	usage: "cc-bench audit [--since D] [--limit N] [--reverse] [--log changes|refused|calls] [--json]",
	about: `Show the audit log (admin only), oldest first: every function call with
the operator, the arguments and the outcome per target, every registry or
operator change (and refused attempt), and every refused connection. The
log is kept durably by the control service (JetStream, in its data
directory) and survives its restarts, in three logs each with its own
size and age limits (cc-control --audit-*): changes (registry and operator
changes, notes of lost records), refused (refused connections and
operations) and calls, so a flood of calls cannot evict a change. A call's
arguments past 1 KiB are cut; the record keeps their size and SHA-256.
A machine refused again and again is one record, then one counting the
repeats within a minute ("N more times").

--limit N shows the newest N records (default 1000) and says when older
ones were left out; --limit 0 shows every record from --since. --reverse
shows the newest first.

--since takes a duration back from now (90m, 24h, 7d) or a time
(2026-01-02T15:04:05Z); 0 reads from the start. --json prints one record per
line with every outcome.`,
	examples: `cc-bench audit
cc-bench audit --since 7d --json
cc-bench audit --since 0 --log changes
cc-bench audit --since 2026-01-02T00:00:00Z --limit 50
cc-bench audit --log refused --limit 20 --reverse`,
}

func runAudit(e *env, args []string) error {
	fs := e.flagSet("audit")
	sinceText := fs.String("since", "24h", "records from `D` ago (e.g. 90m, 7d) or from a time (RFC 3339); 0 for all")
	limit := fs.Int("limit", 1000, "the newest `N` records (0: every record from --since)")
	reverse := fs.Bool("reverse", false, "newest first")
	logName := fs.String("log", "", "only this `LOG`: changes, refused or calls (default all)")
	pos, err := e.parse(fs, args, auditHelp)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("audit takes no arguments, got %q", pos)
	}
	var logs []string
	if *logName != "" {
		if !slices.Contains(fleet.AuditLogs, *logName) {
			return usageErrorf("--log %q: want one of %s", *logName, strings.Join(fleet.AuditLogs, ", "))
		}
		logs = []string{*logName}
	}
	if *limit < 0 || *limit > maxAuditLimit {
		return usageErrorf("--limit %d: want 0 (every record) to %d", *limit, maxAuditLimit)
	}
	since, err := parseSince(*sinceText, now())
	if err != nil {
		return err
	}
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		var recs []fleet.AuditRecord
		older := false
		if *limit > 0 {
			recs, older, err = c.AuditNewest(ctx, since, *limit, logs...)
		} else {
			recs, err = c.Audit(ctx, since, 0, logs...)
		}
		if *reverse {
			slices.Reverse(recs)
		}
		if older {
			defer fmt.Fprintf(e.stderr, "older records were left out: these are the newest %d; raise --limit or narrow --since or --log\n", len(recs))
		}
		if err != nil || e.g.json {
			return jsonLines(e, recs, err)
		}
		if len(recs) == 0 {
			fmt.Fprintln(e.stderr, "no audit records in that period")
			return nil
		}
		t := newTable(e.stdout, "TIME", "KIND", "OPERATOR", "WHAT", "OUTCOME")
		for _, r := range recs {
			what, outcome := auditText(r)
			t.row(timeText(r.Time), r.Kind, dash(r.Operator), what, outcome)
		}
		return t.flush()
	})
}

// maxAuditLimit is the most records one audit reply holds.
const maxAuditLimit = 10000

// parseSince reads --since: 0, a duration (with d for days), or a time.
func parseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(d); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, usageErrorf("--since %q: want a duration (90m, 24h, 7d), a time (2026-01-02T15:04:05Z) or 0", s)
	}
	return now.Add(-d), nil
}

// auditText renders what a record is about and how it ended.
func auditText(r fleet.AuditRecord) (what, outcome string) {
	switch r.Kind {
	case fleet.AuditCall:
		target := "all"
		if !r.Broadcast {
			target = machinesText(r.Outcomes)
		}
		what = r.Function + " on " + target
		if len(r.Args) > 0 && string(r.Args) != "{}" && string(r.Args) != "null" {
			what += " " + truncate(string(r.Args), 60)
		}
		if r.Cut != nil {
			what += fmt.Sprintf(" (args %d bytes, sha256 %.12s…)", r.Cut.Size, r.Cut.SHA256)
		}
		if r.Parts > 1 {
			what += fmt.Sprintf(" (part %d/%d)", r.Part, r.Parts)
		}
		return what, fmt.Sprintf("%d ok, %d error, %d no-response", r.OK, r.Errors, r.NoResp)
	case fleet.AuditRegistry:
		what = r.Op
		if len(r.Request) > 0 {
			what += " " + truncate(string(r.Request), 80)
		}
		if r.Error != "" {
			return what, "refused: " + truncate(r.Error, 80)
		}
		return what, "ok"
	case fleet.AuditRefused:
		from := dash(r.IP)
		if r.Site != "" {
			from += " as reported by site " + r.Site
		}
		what := fmt.Sprintf("%s key %s from %s", dash(r.Name), dash(r.Key), from)
		if r.Count > 0 {
			what += fmt.Sprintf(" (%d more time%s since %s)", r.Count, plural(r.Count), timeText(r.FirstAt))
		}
		return what, truncate(r.Reason, 100)
	case fleet.AuditDropped:
		who := ""
		if r.Operator != "" {
			who = " of " + r.Operator
		}
		return fmt.Sprintf("%d %s records%s lost since %s", r.Dropped, dash(r.DroppedKind), who, timeText(r.DroppedSince)), truncate(r.Reason, 100)
	}
	return "-", "-"
}

func machinesText(outs []fleet.AuditOutcome) string {
	seen := map[string]bool{}
	var ids []string
	for _, o := range outs {
		if !seen[o.Machine] {
			seen[o.Machine] = true
			ids = append(ids, o.Machine)
		}
	}
	if len(ids) > 3 {
		return fmt.Sprintf("%s and %d more", strings.Join(ids[:3], ","), len(ids)-3)
	}
	return strings.Join(ids, ",")
}
