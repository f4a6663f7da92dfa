package cli

import (
	"fmt"
	"sort"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

var sessionsHelp = help{
	usage: `cc-bench sessions [--app APP] [--where KEY=VALUE,…] [--limit N] [--json]`,
	about: `List the sessions ONLINE now: browsers, mobile apps and devices of the
registered apps (cc-bench apps), with what the control service knows of each.
ID, APP, ADMISSION (public or signed), USER (the signed token's subject), IP
and LOCATION are set by the control service and cannot be forged by the
session; PLATFORM is what the session declares.

--where selects sessions by attributes, all of which must hold; values match
case-insensitively and exactly. Keys:
  ` + strings.Join(fleet.SessionWhereKeys, ", ") + `
Quote a value that holds a comma: city="Washington, D.C." (in a shell, put
the whole selector in single quotes).

Listing, watching and calling sessions needs an admin, or a viewer added
with cc-bench operators add … --sessions.

--json prints one session object per line.`,
	examples: `cc-bench sessions
cc-bench sessions --app shop
cc-bench sessions --where city="New Brunswick",region="New Jersey"
cc-bench sessions --where 'city=New Brunswick,region=New Jersey' --json`,
}

func runSessions(e *env, args []string) error {
	fs := e.flagSet("sessions")
	var app, where string
	var limit int
	fs.StringVar(&app, "app", "", "only the sessions of `APP`")
	fs.StringVar(&where, "where", "", "only the sessions with these attributes, `KEY=VALUE,…` (keys above)")
	fs.IntVar(&limit, "limit", 0, "list at most `N` sessions (0: all)")
	pos, err := e.parse(fs, args, sessionsHelp)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("sessions takes no arguments, got %q; to choose sessions use --where or --app", pos[0])
	}
	q, err := sessionQuery(app, where)
	if err != nil {
		return err
	}
	if limit < 0 {
		return usageErrorf("--limit %d: want 0 (all) or more", limit)
	}
	q.Limit = limit
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		ss, err := c.Sessions(ctx, q)
		if err == nil && len(ss) == 0 && len(q.Where) > 0 {
			// As servers --where: a selection that chose nobody fails.
			return &exitError{code: exitFailure, msg: fmt.Sprintf("no ONLINE session matches %s; see which are with: cc-bench sessions", whereText(q.Where))}
		}
		if err != nil || e.g.json {
			return jsonLines(e, ss, err)
		}
		if len(ss) == 0 {
			fmt.Fprintln(e.stderr, "no session is ONLINE")
			return nil
		}
		t := newTable(e.stdout, "ID", "APP", "ADMISSION", "USER", "IP", "LOCATION", "PLATFORM", "SINCE")
		for _, s := range ss {
			t.row(s.ID, s.App, s.Admission, dash(s.User), dash(s.IP), locationText(s.Location), dash(s.Declared.Platform), timeText(s.Since))
		}
		return t.flush()
	})
}

// sessionQuery builds the query of --app and --where, as a usage error
// when bad.
func sessionQuery(app, where string) (fleet.SessionQuery, error) {
	w, err := parseSessionWhere(where)
	if err != nil {
		return fleet.SessionQuery{}, usageErrorf("--where: %v", err)
	}
	if app != "" {
		if err := fleet.ValidateName("app name", app); err != nil {
			return fleet.SessionQuery{}, usageErrorf("--app: %v", err)
		}
		if have, ok := w["app"]; ok && !strings.EqualFold(have, app) {
			return fleet.SessionQuery{}, usageErrorf("--app %s and --where app=%s disagree: give one", app, have)
		}
		if w == nil {
			w = map[string]string{}
		}
		w["app"] = app
	}
	return fleet.SessionQuery{Where: w}, nil
}

// parseSessionWhere reads KEY=VALUE terms separated by commas. A value
// may be quoted with " or ' (a backslash escapes the quote or itself
// inside), which it must be to hold a comma; unquoted values are trimmed.
// Every key must be one of fleet.SessionWhereKeys, and given once.
func parseSessionWhere(s string) (map[string]string, error) {
	if len(s) > 4096 {
		return nil, fmt.Errorf("selector is %d characters long; at most 4096 are allowed", len(s))
	}
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[string]string{}
	i := 0
	for {
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			return nil, fmt.Errorf("term %q: want key=value", strings.TrimSpace(s[i:]))
		}
		key := strings.ToLower(strings.TrimSpace(s[i : i+eq]))
		if key == "" {
			return nil, fmt.Errorf("term %q: the key before = is empty; want key=value", strings.TrimSpace(s[i:]))
		}
		if strings.Contains(key, ",") {
			return nil, fmt.Errorf("term %q: want key=value", strings.TrimSpace(key[:strings.IndexByte(key, ',')]))
		}
		if _, ok := fleet.SessionAttr(&fleet.Session{}, key); !ok {
			return nil, fmt.Errorf("unknown session attribute %q: use one of %s", key, strings.Join(fleet.SessionWhereKeys, ", "))
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("%s is given twice; a session has one %s", key, key)
		}
		i += eq + 1
		for i < len(s) && s[i] == ' ' {
			i++
		}
		var val string
		if i < len(s) && (s[i] == '"' || s[i] == '\'') {
			q := s[i]
			var b strings.Builder
			j := i + 1
			closed := false
			for ; j < len(s); j++ {
				c := s[j]
				if c == '\\' && j+1 < len(s) && (s[j+1] == q || s[j+1] == '\\') {
					b.WriteByte(s[j+1])
					j++
					continue
				}
				if c == q {
					closed = true
					break
				}
				b.WriteByte(c)
			}
			if !closed {
				return nil, fmt.Errorf("the value of %s opens a %c quote that is never closed", key, q)
			}
			val = b.String()
			i = j + 1
			for i < len(s) && s[i] == ' ' {
				i++
			}
			if i < len(s) && s[i] != ',' {
				return nil, fmt.Errorf("after the quoted value of %s: want a comma and the next term, got %q", key, s[i:])
			}
		} else {
			end := strings.IndexByte(s[i:], ',')
			if end < 0 {
				end = len(s) - i
			}
			val = strings.TrimSpace(s[i : i+end])
			if strings.ContainsAny(val, `"'`) {
				return nil, fmt.Errorf("the value of %s %q has a quote inside: quote the whole value, e.g. %s=\"…\"", key, val, key)
			}
			i += end
		}
		out[key] = val
		if i >= len(s) {
			return out, nil
		}
		i++ // the comma
		if strings.TrimSpace(s[i:]) == "" {
			return nil, fmt.Errorf("the selector ends with a comma: remove it")
		}
	}
}

// whereText renders a session selection as it would be typed.
func whereText(w map[string]string) string {
	keys := make([]string, 0, len(w))
	for k := range w {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		v := w[k]
		if v == "" || strings.ContainsAny(v, `, "'`) {
			v = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
		}
		parts[i] = k + "=" + v
	}
	return strings.Join(parts, ",")
}

// locationText renders a location as "New Brunswick, New Jersey, US"
// (with the operator's site first, when the CIDR map named one), or "-".
func locationText(l *fleet.Location) string {
	if l == nil {
		return "-"
	}
	var parts []string
	for _, p := range []string{l.City, l.Region, firstNonEmpty(l.CountryCode, l.Country)} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	s := strings.Join(parts, ", ")
	if l.Site != "" {
		if s == "" {
			return "site " + l.Site
		}
		s = l.Site + ": " + s
	}
	return dash(s)
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// watchSessions is cc-bench watch --sessions.
func watchSessions(e *env, q fleet.SessionQuery) error {
	c, err := e.connect(bench.WithNATSOptions(nats.MaxReconnects(-1)))
	if err != nil {
		return err
	}
	defer c.Close()
	shown := map[string]bool{}
	resynced := false
	cols := &watchTable{widths: []int{0, len(bench.EventPresent)}} // lines up the columns (watch.go)
	var werr error
	err = c.WatchSessions(e.ctx, func(ev fleet.SessionEvent) {
		if werr != nil {
			return
		}
		switch ev.Event {
		case bench.EventSynced, bench.EventStale, bench.EventResync:
			if werr = cols.flush(e.stdout); werr != nil {
				return
			}
			werr = watchNoteOut(e, fleet.PresenceEvent{Event: ev.Event, Time: ev.Time, Seq: ev.Seq, Reason: ev.Reason}, len(shown), resynced)
			resynced = resynced || ev.Event == bench.EventResync
			return
		}
		if ok, _ := fleet.MatchSession(&ev.Session, q.Where); !ok {
			return
		}
		if ev.Event == fleet.EventLeft {
			delete(shown, ev.Session.ID)
		} else {
			shown[ev.Session.ID] = true
		}
		if e.g.json {
			ev.Epoch = ""
			werr = jsonLine(e.stdout, ev)
			return
		}
		werr = cols.add(e.stdout, sessionEventCols(ev)...)
	})
	return watchEnd(werr, err)
}

// sessionEventCols are the columns of a session's present, joined or
// left line: time, event, id, app, IP, location, platform, user=,
// (reason).
func sessionEventCols(ev fleet.SessionEvent) []string {
	s := ev.Session
	user, reason := "", ""
	if s.User != "" {
		user = "user=" + s.User
	}
	if ev.Reason != "" {
		reason = "(" + ev.Reason + ")"
	}
	return []string{timeText(ev.Time), ev.Event, s.ID, s.App, dash(s.IP), locationText(s.Location), dash(s.Declared.Platform), user, reason}
}
