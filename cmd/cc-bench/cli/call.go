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
	usage: `cc-bench call FUNCTION [--where SELECTOR | --machine ID...] [--arg k=v]... [--filter EXPR] [--timeout D]
                     [--output table|json|yaml|csv] [--fields PATHS] [--show ok|failed|all] [--summary]
                     [--batch N|N% [--batch-wait D] [--batch-continue]]
       cc-bench call FUNCTION --sessions [--app APP] [--where KEY=VALUE,…] [--arg k=v]... [--filter EXPR] [--timeout D] [--json]`,
	about: `Call FUNCTION on every ONLINE machine the selector chooses (all of them
without --where) and list each machine's reply, then a summary. The call ends
as soon as every expected machine has answered, or at --timeout.

--where selects by labels and by the facts agents report, as in cc-bench
servers: role=web,platform=debian (and), 'role in (web,db)', 'arch != arm64',
'role=db or os=darwin'; a selection that matches no ONLINE machine is an
error (exit 1) naming a key no machine has ("did you mean role?").

--filter keeps the ok results for which an expression holds, e.g.
'load1 > 10 and memory.used_percent >= 90'; operators: > >= < <= == !=
=~ (regular expression) !~, and/or/not, parentheses; strings in quotes.
A result without the field does not match; a field no result has (a typo:
"did you mean load1?") or a number compared with a string is an error.

The table shows each built-in function its own way: a row per machine
(machine-info: platform, kernel, memory, uptime; current-load: load
averages and pressure stall, some avg10; current-cpu-mem-diskio: CPU,
memory, disk rates; sw-list: manager and count; installed-sec-patches:
pending and installed counts, CVEs fixed, the security index), then the
list it returns (packages, pending security updates) and the agents'
notes (e.g. an expired apt index). Other functions: the result as JSON.

--output json (or --json) prints one object per machine: {"machine",
"status" (ok, error or no-response), "unexpected" (a machine that was not
expected, e.g. came online after the call started), "result" or "error":
{"code", "description"}, "duration_ms"}. --output yaml prints the same as
a YAML sequence. --output csv prints a row per machine (sw-list and
installed-sec-patches: per package), text that starts with = + - @
prefixed with ' so that no spreadsheet runs it.

--fields load1,memory.used_percent shows those dotted paths of each
result (a number indexes an array: packages.0.name) as the columns of the
table and CSV, or as "fields" instead of "result" in JSON and YAML.
--show ok or failed lists only those replies. --summary adds, for each
numeric field (of --fields, or every one outside arrays), its min, median,
max and sum across the ok replies: a table under the rows, the last
object {"summary": [...]} in JSON and YAML, or the summary alone in CSV.

--sessions calls the ONLINE sessions (browsers, mobile apps, devices of the
registered apps) instead of machines, with the same semantics: the sessions
selected are expected, the call ends when all have answered, and each is
reported ok, error or no response. --where then selects sessions by
attribute, case-insensitively (the keys: cc-bench sessions --help), e.g.
city="New Brunswick",region="New Jersey", and --app by app; rows and --json
objects name "session", "app" and "location" instead of "machine". It needs
an admin, or a viewer added with cc-bench operators add … --sessions.

--batch N (or N%) calls the machines selected N at a time (N% of them,
at least one), sorted by id, each batch once the one before it completed
and --batch-wait passed; it stops after a batch in which a machine
answered an error or did not answer (--batch-continue goes on): the
machines left are listed "not-called". Each batch's progress goes to
stderr.

Exit status: 0 when every expected machine (or session) answered ok, 1
otherwise (a selection that matches nobody, or a --filter naming a field
no result has, included), 2 for a usage error.`,
	examples: `cc-bench call machine-info
cc-bench call current-load --where location=New-Jersey --filter 'load1 > 10'
cc-bench call sw-list --arg name=openssl --machine 10.0.0.5_web01 --json
cc-bench call current-cpu-mem-diskio --fields cpu_percent,memory.used_percent --summary
cc-bench call installed-sec-patches --show failed
cc-bench call sw-list --output csv > packages.csv
cc-bench call restart-app --where role=web --batch 10% --batch-wait 30s
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
	view               viewFlags  // --output, --fields, --show, --summary: render.go
	batch              batchFlags // --batch, --batch-wait, --batch-continue (batch.go)
}

func runCall(e *env, args []string) error {
	fs := e.flagSet("call")
	var f callFlags
	fs.StringVar(&f.where, "where", "", "call the ONLINE machines matching this `selector` of labels and facts, e.g. role=web,platform=debian")
	fs.Var(&f.args, "arg", "a function argument `k=v` (repeatable)")
	fs.StringVar(&f.filter, "filter", "", "list only the results for which this `expression` holds")
	fs.Var(&f.targets, "machine", "call this machine `ID`, online or not, instead of a selection (repeatable)")
	fs.BoolVar(&f.sessions, "sessions", false, "call the ONLINE sessions (browsers, apps, devices) --where and --app select, instead of machines")
	fs.StringVar(&f.app, "app", "", "with --sessions: only the sessions of `APP`")
	f.view.add(fs)
	f.batch.register(fs)
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
	view, err := f.view.view(e, fn, f.sessions)
	if err != nil {
		return err
	}
	opts.Timeout = e.g.timeout
	// --batch: the call in batches (batch.go).
	if b, err := f.batch.parse(f.sessions); err != nil || b != nil {
		if err != nil {
			return err
		}
		return runCallBatches(e, fn, fargs, opts, filter, view, *b)
	}
	c, err := e.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	out := &callOutput{e: e, filter: filter, check: filter.Check(), sessions: opts.Sessions != nil, view: view}
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
	if err == nil && sum.AllNotFound() {
		return e.notServed(c, fn, opts) // notserved.go
	}
	return out.end(sum, err)
}

// end prints the results of a call that returned sum and err and returns
// the command's outcome: the selection that chose nobody, an interrupted
// call, a filter that does not fit the results, or a machine that did not
// answer ok fail (exit 1).
func (o *callOutput) end(sum *bench.Summary, err error) error {
	if errors.Is(err, bench.ErrNoMatch) {
		return noMatchError(err, o.sessions)
	}
	if werr := o.finish(sum); werr != nil {
		return werr
	}
	if errors.Is(err, context.Canceled) {
		return &exitError{code: exitFailure, msg: "interrupted: the results above are partial"}
	}
	if err != nil {
		return err
	}
	if err := o.check.Err(); err != nil {
		// A typo in a field, or a number compared with a string: the
		// filter said nothing about the results.
		return &exitError{code: exitFailure, msg: fmt.Sprintf("--filter %q: %v", o.filter.String(), err)}
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

// callOutput prints replies: streamed as JSON Lines or YAML, or sorted in
// a table or CSV (render.go).
type callOutput struct {
	e        *env
	sessions bool // a call to sessions
	filter   *bench.Filter
	check    *bench.FilterCheck // filter's, over the ok results
	view     *callView
	rows     []viewReply
	matched  int
	err      error
}

func (o *callOutput) add(r bench.Reply) {
	if o.filter != nil && (r.Status != bench.StatusOK || !o.check.Match(r.Result)) {
		return
	}
	o.matched++
	if !o.view.shows(r) {
		return
	}
	vr := o.view.reply(r)
	if o.view.keeps() {
		o.rows = append(o.rows, vr)
	}
	if o.view.streams() && o.err == nil {
		o.err = o.view.stream(o.e.stdout, vr)
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
	sort.SliceStable(o.rows, func(i, j int) bool { return o.rows[i].Target() < o.rows[j].Target() })
	if o.view.format != formatTable {
		if err := o.view.finishMachine(o.e.stdout, o.rows); err != nil {
			return err
		}
		if isTerminal(o.e.stderr) {
			_ = printf(o.e.stderr, "%s\n", line)
		}
		return nil
	}
	if err := o.view.table(o.e.stdout, o.rows); err != nil {
		return err
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
	if r.Status == bench.StatusNotCalled {
		s = "not called"
	}
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
