package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

var callHelp = help{
	usage: `cc-bench call FUNCTION [--where SELECTOR | --machine ID...] [--arg k=v]... [--filter EXPR] [--timeout D] [--json]
       cc-bench call FUNCTION --sessions [--app APP] [--where KEY=VALUE,…] [--arg k=v]... [--filter EXPR] [--timeout D] [--json]`,
	about: `Call FUNCTION on every ONLINE machine the selector chooses (all of them
without --where) and list each machine's reply, then a summary. The call ends
as soon as every expected machine has answered, or at --timeout.

--filter keeps the ok results for which an expression holds, e.g.
'load1 > 10 and memory.used_percent >= 90'; operators: > >= < <= == !=
=~ (regular expression) !~, and/or/not, parentheses; strings in quotes.
A result without the field does not match; a field no result has (a typo:
"did you mean load1?") or a number compared with a string is an error.

--json prints one object per machine: {"machine", "status" (ok, error or
no-response), "unexpected" (a machine that was not expected, e.g. came
online after the call started), "result" or "error": {"code",
"description"}, "duration_ms"}.

--sessions calls the ONLINE sessions (browsers, mobile apps, devices of the
registered apps) instead of machines, with the same semantics: the sessions
selected are expected, the call ends when all have answered, and each is
reported ok, error or no response. --where then selects sessions by
attribute, case-insensitively (the keys: cc-bench sessions --help), e.g.
city="New Brunswick",region="New Jersey", and --app by app; rows and --json
objects name "session", "app" and "location" instead of "machine". It needs
an admin, or a viewer added with cc-bench operators add … --sessions.

Exit status: 0 when every expected machine (or session) answered ok, 1
otherwise (a selection that matches nobody, or a --filter naming a field
no result has, included), 2 for a usage error.`,
	examples: `cc-bench call machine-info
cc-bench call current-load --where location=New-Jersey --filter 'load1 > 10'
cc-bench call sw-list --arg name=openssl --machine 10.0.0.5_web01 --json
cc-bench call latencyCheck --sessions --where 'city=New Brunswick,region=New Jersey' --arg url=https://example.com/
cc-bench call latencyCheck --sessions --app shop --arg url=https://example.com/ --json`,
}

// callLine is one machine (or session) in --json output.
type callLine struct {
	Machine    string          `json:"machine,omitempty"`
	Session    string          `json:"session,omitempty"`
	App        string          `json:"app,omitempty"`
	Location   *fleet.Location `json:"location,omitempty"`
	Status     bench.Status    `json:"status"`
	Unexpected bool            `json:"unexpected,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      *fleet.Error    `json:"error,omitempty"`
	DurationMS int64           `json:"duration_ms"`
}

type callFlags struct {
	where, filter, app string
	args, targets      listFlag
	sessions           bool
}

func runCall(e *env, args []string) error {
	fs := e.flagSet("call")
	var f callFlags
	fs.StringVar(&f.where, "where", "", "call the ONLINE machines matching this `selector`, e.g. role=web")
	fs.Var(&f.args, "arg", "a function argument `k=v` (repeatable)")
	fs.StringVar(&f.filter, "filter", "", "list only the results for which this `expression` holds")
	fs.Var(&f.targets, "machine", "call this machine `ID`, online or not, instead of a selection (repeatable)")
	fs.BoolVar(&f.sessions, "sessions", false, "call the ONLINE sessions (browsers, apps, devices) --where and --app select, instead of machines")
	fs.StringVar(&f.app, "app", "", "with --sessions: only the sessions of `APP`")
	pos, err := e.parse(fs, args, callHelp)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("call needs exactly one FUNCTION, e.g. cc-bench call current-load (got %d arguments)", len(pos))
	}
	fn := pos[0]
	if err := fleet.ValidateName("function name", fn); err != nil {
		return usageErrorf("%v", err)
	}
	opts, filter, fargs, err := f.options()
	if err != nil {
		return err
	}
	opts.Timeout = e.g.timeout
	c, err := e.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	out := &callOutput{e: e, filter: filter, check: filter.Check(), sessions: opts.Sessions != nil}
	prog := startProgress(e.stderr, e.g.timeout)
	opts.Published = prog.published
	sum, err := c.Stream(e.ctx, fn, fargs, opts, func(r bench.Reply) {
		prog.reply(r)
		out.add(r)
	})
	prog.stop(sum)
	if sum == nil {
		return err
	}
	if werr := out.finish(sum); werr != nil {
		return werr
	}
	if errors.Is(err, context.Canceled) {
		return &exitError{code: exitFailure, msg: "interrupted: the results above are partial"}
	}
	if errors.Is(err, bench.ErrNoMatch) {
		return noMatchError(err, out.sessions)
	}
	if err != nil {
		return err
	}
	if err := out.check.Err(); err != nil {
		// A typo in a field, or a number compared with a string: the
		// filter said nothing about the results.
		return &exitError{code: exitFailure, msg: fmt.Sprintf("--filter %q: %v", filter.String(), err)}
	}
	if !sum.AllOK() {
		return &exitError{code: exitFailure}
	}
	return nil
}

func (f *callFlags) options() (bench.CallOptions, *bench.Filter, map[string]any, error) {
	var opts bench.CallOptions
	var err error
	switch {
	case f.sessions && len(f.targets) > 0:
		return opts, nil, nil, usageErrorf("--machine names machines; --sessions calls sessions: give one")
	case f.sessions:
		q, err := sessionQuery(f.app, f.where)
		if err != nil {
			return opts, nil, nil, err
		}
		opts.Sessions = &q
	case f.app != "":
		return opts, nil, nil, usageErrorf("--app selects sessions: add --sessions")
	}
	if !f.sessions {
		if opts.Where, err = parseWhere(f.where); err != nil {
			return opts, nil, nil, err
		}
	}
	if len(f.targets) > 0 {
		if f.where != "" {
			return opts, nil, nil, usageErrorf("give either --machine or --where, not both")
		}
		for _, id := range f.targets {
			if err := fleet.ValidateMachineID(id); err != nil {
				return opts, nil, nil, usageErrorf("--machine: %v", err)
			}
		}
		opts.Machines = f.targets
	}
	var filter *bench.Filter
	if f.filter != "" {
		if filter, err = bench.ParseFilter(f.filter); err != nil {
			return opts, nil, nil, usageErrorf("--filter: %v", err)
		}
	}
	kv, err := keyValues("--arg", f.args)
	if err != nil {
		return opts, nil, nil, err
	}
	var fargs map[string]any
	if len(kv) > 0 {
		fargs = make(map[string]any, len(kv))
		for k, v := range kv {
			fargs[k] = v // the agent converts to the declared type
		}
	}
	return opts, filter, fargs, nil
}

// callOutput prints replies: streamed as JSON Lines, or a sorted table.
type callOutput struct {
	e        *env
	sessions bool // a call to sessions
	filter   *bench.Filter
	check    *bench.FilterCheck // filter's, over the ok results
	rows     []bench.Reply
	matched  int
	err      error
}

func (o *callOutput) add(r bench.Reply) {
	if o.filter != nil && (r.Status != bench.StatusOK || !o.check.Match(r.Result)) {
		return
	}
	o.matched++
	if !o.e.g.json {
		o.rows = append(o.rows, r)
		return
	}
	if o.err == nil {
		o.err = jsonLine(o.e.stdout, callLine{
			Machine: r.Machine, Session: r.Session, App: r.App, Location: r.Location, Status: r.Status, Unexpected: r.Unexpected,
			Result: r.Result, Error: r.Err, DurationMS: r.Duration.Milliseconds(),
		})
	}
}

func (o *callOutput) finish(sum *bench.Summary) error {
	if o.err != nil {
		return o.err
	}
	line := sum.String()
	if o.filter != nil {
		line += fmt.Sprintf("; %d matched %s", o.matched, o.filter)
	}
	line += fmt.Sprintf(" (took %s)", tookText(sum.Took))
	if o.e.g.json {
		if isTerminal(o.e.stderr) {
			_ = printf(o.e.stderr, "%s\n", line)
		}
		return nil
	}
	if len(o.rows) > 0 {
		sort.SliceStable(o.rows, func(i, j int) bool { return o.rows[i].Target() < o.rows[j].Target() })
		var t *table
		if o.sessions {
			t = newTable(o.e.stdout, "SESSION", "APP", "LOCATION", "STATUS", "RESULT")
		} else {
			t = newTable(o.e.stdout, "MACHINE", "STATUS", "RESULT")
		}
		for _, r := range o.rows {
			if o.sessions {
				t.row(r.Session, dash(r.App), locationText(r.Location), statusText(r), resultText(r))
			} else {
				t.row(r.Machine, statusText(r), resultText(r))
			}
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	return printf(o.e.stdout, "%s\n", line)
}

// noMatchError is a call (or listing) whose selection chose nobody:
// exit 1, in JSON mode too, with where to look.
func noMatchError(err error, sessions bool) error {
	see := "cc-bench servers"
	if sessions {
		see = "cc-bench sessions"
	}
	return &exitError{code: exitFailure, msg: err.Error() + "; see which are with: " + see}
}

func statusText(r bench.Reply) string {
	s := string(r.Status)
	if r.Status == bench.StatusNoResponse {
		s = "no response"
	}
	if r.Unexpected {
		s += " (unexpected)"
	}
	return s
}

// resultText summarises a reply on one line.
func resultText(r bench.Reply) string {
	switch {
	case r.Err != nil:
		return truncate(fmt.Sprintf("%d %s", r.Err.Code, strings.Join(strings.Fields(r.Err.Description), " ")), 100)
	case r.Status != bench.StatusOK:
		return "-"
	}
	var b bytes.Buffer
	if json.Compact(&b, r.Result) != nil {
		return truncate(string(r.Result), 100)
	}
	return truncate(b.String(), 100)
}
