package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

var watchHelp = help{
	usage: "cc-bench watch [--where SELECTOR] [--json]",
	about: `Show the machines ONLINE now ("present"), then every machine that comes
online ("joined") or goes offline ("left"), until Ctrl-C. Nothing is missed
between the list and the live events.

--json prints one object per line: {"event", "machine", "labels", "time",
"seq", "reason"}; the event is present, joined or left.`,
	examples: `cc-bench watch
cc-bench watch --where role=web --json | jq -c 'select(.event == "left")'`,
}

func runWatch(e *env, args []string) error {
	fs := e.flagSet("watch")
	where := fs.String("where", "", "show only machines matching this `selector`")
	pos, err := e.parse(fs, args, watchHelp)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("watch takes no arguments, got %q", pos[0])
	}
	sel, err := parseWhere(*where)
	if err != nil {
		return err
	}
	c, err := e.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	online := 0
	var werr error
	err = c.Watch(e.ctx, func(ev fleet.PresenceEvent) {
		if werr != nil {
			return
		}
		if ev.Event == bench.EventSynced {
			if !e.g.json {
				werr = printf(e.stdout, "-- %d online; watching for changes (Ctrl-C to stop)\n", online)
			}
			return
		}
		if !sel.Match(ev.Machine, ev.Labels) {
			return
		}
		if ev.Event == bench.EventPresent {
			online++
		}
		if e.g.json {
			werr = jsonLine(e.stdout, ev)
			return
		}
		werr = printf(e.stdout, "%s\n", eventText(ev))
	})
	if werr != nil {
		return werr
	}
	if errors.Is(err, context.Canceled) {
		return nil // Ctrl-C
	}
	return err
}

func eventText(ev fleet.PresenceEvent) string {
	s := fmt.Sprintf("%s  %-7s  %s  %s", timeText(ev.Time), ev.Event, ev.Machine, labelText(ev.Labels))
	if ev.Reason != "" {
		s += "  (" + ev.Reason + ")"
	}
	return strings.TrimRight(s, " ")
}
