package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/termsafe"
)

var watchHelp = help{
	usage: "cc-bench watch [--where SELECTOR] [--json] | --sessions [--app APP] [--where KEY=VALUE,…] [--json]",
	about: `Show the machines ONLINE now ("present"), then every machine that comes
online ("joined") or goes offline ("left"), and every ONLINE machine whose
agent reports new facts about its host ("updated", with them), until
Ctrl-C. Nothing is missed between the list and the live events. Columns:
time, event, machine, labels, (reason) or the facts of an updated.
"-- N online" marks the list complete ("synced"): from there on each line
is a live change. --where selects by labels and facts as in cc-bench
servers; a machine's left (and an updated that takes it out of the
selection) is shown when it was selected.

When the watch may have missed events — its connection to the broker was
lost and re-established (a broker restart, credentials renewed, the process
stopped for a while), the events' numbers jump, or it fell behind — it says
so ("resync" and why), reads a fresh list and shows what changed meanwhile
as joined or left "(found by resync)". While the connection is down it
says "stale" and keeps reconnecting; it exits (status 1) only when the
broker refuses the key.

--json prints one object per line: {"event", "machine", "labels", "time",
"seq", "reason", "facts"} for present, joined, updated and left; {"event", "time", "seq",
"online"} for synced (the list is complete, at the start and after each
resync); {"event", "time", "seq", "reason"} for stale and resync.

--sessions watches sessions instead of machines (their events are apart):
present, joined and left lines name the session id, app, IP, location and
declared platform; --where then selects sessions by attribute, as in
cc-bench sessions (e.g. city="New Brunswick",region="New Jersey"), and
--app by app. With --json, present, joined and left are
{"event", "session": {…}, "time", "seq", "reason"}.`,
	examples: `cc-bench watch
cc-bench watch --where role=web --json | jq -c 'select(.event == "left")'
cc-bench watch --sessions --app shop
cc-bench watch --sessions --where 'city=New Brunswick,region=New Jersey' --json`,
}

// watchNote is the JSON record of a watch event that names no machine.
type watchNote struct {
	Event  string    `json:"event"`
	Time   time.Time `json:"time"`
	Seq    uint64    `json:"seq"`
	Online *int      `json:"online,omitempty"`
	Reason string    `json:"reason,omitempty"`
}

func runWatch(e *env, args []string) error {
	fs := e.flagSet("watch")
	where := fs.String("where", "", "show only machines matching this `selector` (with --sessions: sessions with these attributes)")
	sessions := fs.Bool("sessions", false, "watch the sessions (browsers, apps, devices) instead of the machines")
	app := fs.String("app", "", "with --sessions: only the sessions of `APP`")
	pos, err := e.parse(fs, args, watchHelp)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("watch takes no arguments, got %q", pos[0])
	}
	if *sessions {
		q, err := sessionQuery(*app, *where)
		if err != nil {
			return err
		}
		return watchSessions(e, q)
	}
	if *app != "" {
		return usageErrorf("--app selects sessions: add --sessions")
	}
	sel, err := parseWhere(*where)
	if err != nil {
		return err
	}
	// A watch runs for hours: it reconnects for as long as it takes
	// (nats.go still gives up when the broker refuses the key).
	c, err := e.connect(bench.WithNATSOptions(nats.MaxReconnects(-1)))
	if err != nil {
		return err
	}
	defer c.Close()
	shown := map[string]bool{} // the selected machines ONLINE
	resynced := false
	cols := &watchTable{widths: []int{0, len(bench.EventPresent)}} // the event column never narrower
	var werr error
	err = c.Watch(e.ctx, func(ev fleet.PresenceEvent) {
		if werr != nil {
			return
		}
		switch ev.Event {
		case bench.EventSynced, bench.EventStale, bench.EventResync:
			if werr = cols.flush(e.stdout); werr != nil {
				return
			}
			werr = watchNoteOut(e, ev, len(shown), resynced)
			resynced = resynced || ev.Event == bench.EventResync
			return
		}
		// A left event is shown if the machine was; the others if
		// the machine is selected (an updated one also if it was).
		selected := sel.MatchFacts(ev.Machine, ev.Labels, ev.Facts)
		switch {
		case ev.Event == fleet.EventLeft:
			if !shown[ev.Machine] && !selected {
				return
			}
			delete(shown, ev.Machine)
		case selected:
			shown[ev.Machine] = true
		case ev.Event == fleet.EventUpdated && shown[ev.Machine]:
			delete(shown, ev.Machine)
		default:
			return
		}
		if e.g.json {
			ev.Epoch = "" // the watcher's business: it resyncs when it changes
			werr = jsonLine(e.stdout, ev)
			return
		}
		werr = cols.add(e.stdout, eventCols(ev)...)
	})
	return watchEnd(werr, err)
}

// watchEnd is a watch's outcome: an output error, nothing after Ctrl-C,
// or what ended it.
func watchEnd(werr, err error) error {
	if werr != nil {
		return werr
	}
	if errors.Is(err, context.Canceled) {
		return nil // Ctrl-C
	}
	return err
}

// watchNoteOut prints a synced, stale or resync event; online is how many
// selected machines are ONLINE, resynced whether a resync came before.
func watchNoteOut(e *env, ev fleet.PresenceEvent, online int, resynced bool) error {
	if e.g.json {
		n := watchNote{Event: ev.Event, Time: ev.Time, Seq: ev.Seq, Reason: ev.Reason}
		if ev.Event == bench.EventSynced {
			n.Online = &online
		}
		return jsonLine(e.stdout, n)
	}
	var err error
	switch {
	case ev.Event == bench.EventStale:
		err = printf(e.stdout, "-- %s  stale: %s\n", timeText(ev.Time), ev.Reason)
	case ev.Event == bench.EventResync:
		err = printf(e.stdout, "-- %s  resync: %s; reading the list again\n", timeText(ev.Time), ev.Reason)
	case resynced:
		err = printf(e.stdout, "-- %d online after the resync; watching for changes (Ctrl-C to stop)\n", online)
	default:
		err = printf(e.stdout, "-- %d online; watching for changes (Ctrl-C to stop)\n", online)
	}
	return err
}

// eventCols are the columns of a present, joined, updated or left line:
// time, event, machine, labels and (reason), or an updated's facts.
func eventCols(ev fleet.PresenceEvent) []string {
	reason := ""
	if ev.Event == fleet.EventUpdated {
		reason = factsText(ev.Facts)
	}
	if ev.Reason != "" {
		reason = "(" + ev.Reason + ")"
	}
	return []string{timeText(ev.Time), ev.Event, ev.Machine, labelText(ev.Labels), reason}
}

// watchTable lines up the columns of a watch's lines. The present lines
// are held until the list is complete (the first note: synced, or stale)
// and padded to their widest cells; a later line is padded to the widths
// seen so far, which a wider cell widens from then on.
type watchTable struct {
	widths []int
	held   [][]string
	live   bool
}

// add prints a line of cells, or holds it until flush.
func (t *watchTable) add(w io.Writer, cells ...string) error {
	for i, c := range cells {
		cells[i] = termsafe.String(c)
		if i == len(t.widths) {
			t.widths = append(t.widths, 0)
		}
		t.widths[i] = max(t.widths[i], utf8.RuneCountInString(cells[i]))
	}
	if !t.live {
		t.held = append(t.held, cells)
		return nil
	}
	return t.print(w, cells)
}

// flush prints the held lines; the lines added after it print at once.
func (t *watchTable) flush(w io.Writer) error {
	t.live = true
	for _, cells := range t.held {
		if err := t.print(w, cells); err != nil {
			return err
		}
	}
	t.held = nil
	return nil
}

func (t *watchTable) print(w io.Writer, cells []string) error {
	var b strings.Builder
	for i, c := range cells {
		if i > 0 {
			b.WriteString("  ")
		}
		b.WriteString(c)
		if i < len(cells)-1 {
			b.WriteString(strings.Repeat(" ", t.widths[i]-utf8.RuneCountInString(c)))
		}
	}
	return printf(w, "%s\n", strings.TrimRight(b.String(), " "))
}

// factsText renders an agent's facts on one line: "debian 12.5 linux/arm64
// kernel 6.1.0 2 CPUs 4.0 GiB kvm agent 0.1.0", or "no facts".
func factsText(f *fleet.Facts) string {
	if f == nil {
		return "no facts"
	}
	var parts []string
	add := func(s string) {
		if s = strings.TrimSpace(s); s != "" {
			parts = append(parts, s)
		}
	}
	add(f.Platform + " " + f.PlatformVersion)
	add(strings.Trim(f.OS+"/"+f.Arch, "/"))
	if f.Kernel != "" {
		add("kernel " + f.Kernel)
	}
	if f.CPUs > 0 {
		add(fmt.Sprintf("%d CPUs", f.CPUs))
	}
	if f.MemoryBytes > 0 {
		add(memText(f.MemoryBytes))
	}
	add(f.Virtualization)
	add(f.Container)
	if f.AgentVersion != "" {
		add("agent " + f.AgentVersion)
	}
	if len(parts) == 0 {
		return "no facts"
	}
	return strings.Join(parts, " ")
}
