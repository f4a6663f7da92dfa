package cli

import (
	"fmt"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

var historyHelp = help{
	usage: "cc-bench history [--since D] [--until D] [--where SELECTOR] [--machine M] [--limit N] [--newest] [--json]",
	about: `Show when machines joined (came ONLINE) and left (went offline), in time
order, with why each left as its broker said: Client Closed (the agent
stopped), Stale Connection (it stopped answering: the host or network went
down), Kicked, credentials expired, a broker shut down, or left while the
control service was down. "What went down overnight?" is
cc-bench history --since 12h.

The control service keeps this history durably (JetStream) for
cc-control --history-retention (default 30 days); older entries are gone,
and the command says so when the period you ask for reaches past them.
Viewers may read it.

--since and --until take a duration back from now (90m, 24h, 7d) or a time
(2026-01-02T15:04:05Z); --since 0 reads from the oldest kept. --where
selects by the labels each machine had at the time (and the facts machine,
ip, hostname), as in cc-bench servers. --json prints one entry per line.`,
	examples: `cc-bench history --since 12h
cc-bench history --since 7d --where role=db
cc-bench history --machine 10.0.0.5_web01 --since 0
cc-bench history --since 2026-01-02T00:00:00Z --until 2026-01-03T00:00:00Z --json
cc-bench history --newest --limit 20`,
}

func runHistory(e *env, args []string) error {
	fs := e.flagSet("history")
	sinceText := fs.String("since", "24h", "entries from `D` ago (e.g. 90m, 7d) or from a time (RFC 3339); 0 from the oldest kept")
	untilText := fs.String("until", "", "entries before `D` ago or before a time (RFC 3339); default now")
	where := fs.String("where", "", "only machines this `SELECTOR` chooses by the labels they had at the time, e.g. role=web,env=prod")
	machine := fs.String("machine", "", "only machine `ID`'s entries")
	limit := fs.Int("limit", 1000, "at most `N` entries (0: no limit)")
	newest := fs.Bool("newest", false, "newest first (with --limit: the latest N)")
	pos, err := e.parse(fs, args, historyHelp)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("history takes no arguments, got %q; for one machine use --machine %s", pos, pos[0])
	}
	if *limit < 0 {
		return usageErrorf("--limit %d: give a number of entries, or 0 for no limit", *limit)
	}
	if *machine != "" {
		if err := fleet.ValidateMachineID(*machine); err != nil {
			return usageErrorf("--machine: %v", err)
		}
	}
	sel, err := parseWhere(*where)
	if err != nil {
		return err
	}
	t := now()
	since, err := parseSince(*sinceText, t)
	if err != nil {
		return err
	}
	var until time.Time
	if *untilText != "" {
		if until, err = parseSince(*untilText, t); err != nil {
			return usageErrorf("--until %q: want a duration back from now (90m, 24h, 7d) or a time (2026-01-02T15:04:05Z)", *untilText)
		}
		if !since.IsZero() && !until.After(since) {
			return usageErrorf("--until (%s) must be after --since (%s)", timeText(until), timeText(since))
		}
	}
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		h, err := c.History(ctx, bench.HistoryOptions{Since: since, Until: until, Machine: *machine, Where: sel, Limit: *limit, Newest: *newest})
		if err != nil {
			return err
		}
		if e.g.json {
			if err := jsonLines(e, h.Entries, nil); err != nil {
				return err
			}
		} else if len(h.Entries) > 0 {
			tb := newTable(e.stdout, "TIME", "EVENT", "MACHINE", "REASON", "LABELS")
			for _, en := range h.Entries {
				tb.row(timeText(en.Time), en.Event, en.Machine, dash(en.Reason), labelText(en.Labels))
			}
			if err := tb.flush(); err != nil {
				return err
			}
		} else {
			fmt.Fprintln(e.stderr, "no machine joined or left in that period")
		}
		if h.More {
			_ = printf(e.stderr, "more entries follow: raise --limit (0: no limit) or narrow --since/--until\n")
		}
		if note := trimmedNote(h, since); note != "" {
			fmt.Fprintln(e.stderr, note)
		}
		if h.MachineTrimmed {
			_ = printf(e.stderr, "only the last %d joins and %d leaves of %s are kept (cc-control --history-per-machine); its older ones are gone\n",
				h.PerMachine, h.PerMachine, *machine)
		}
		return nil
	})
}

// trimmedNote says, when the period asked for (from since) reaches past
// the entries the service still keeps, that older ones are gone, so an
// empty start is not read as "nothing happened".
func trimmedNote(h *bench.History, since time.Time) string {
	if !h.Trimmed || (!since.IsZero() && !h.Oldest.IsZero() && !since.Before(h.Oldest)) {
		return ""
	}
	if h.Oldest.IsZero() {
		return fmt.Sprintf("history is kept for %s (cc-control --history-retention); everything older is gone", ageText(h.Retention))
	}
	return fmt.Sprintf("history is kept for %s (cc-control --history-retention); entries before %s are gone", ageText(h.Retention), timeText(h.Oldest))
}
