package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

var reportHelp = help{
	usage: `cc-bench report patches [--where SELECTOR | --machine ID...] [--arg name=PATTERN] [--output table|csv|json] [--timeout D]`,
	about: `Fleet reports, built from a call to the selected ONLINE machines (all of
them without --where).

  patches  calls installed-sec-patches and lists the pending security
           updates of the fleet: a row per package, version available and
           CVE id (where the agent names them: dnf and yum advisories),
           with the advisory and severity, how many machines need it and
           which.
           Then the machines that could not say (no package database, no
           security index, no answer) and what the agents noted (an apt
           index past its Valid-Until: run apt-get update there).

--arg name=PATTERN limits the packages (a glob, or a part of the name).
--output csv prints the rows (package, available, cve, advisory, severity,
machines, which: the machine ids separated by spaces) for a spreadsheet;
--output json (or --json) prints one object: {"updates": [{"package",
"available", "cve", "advisory", "severity", "machines", "which"}], "machines":
[{"machine", "status", "source", "pending", "notes", "error"}]}.

Exit status: 0 when every expected machine answered, 1 otherwise, 2 for a
usage error.`,
	examples: `cc-bench report patches
cc-bench report patches --where role=web --arg name=openssl
cc-bench report patches --output csv > pending.csv`,
}

func runReport(e *env, args []string) error {
	fs := e.flagSet("report")
	var f callFlags
	var output string
	fs.StringVar(&f.where, "where", "", "report on the ONLINE machines matching this `selector`, e.g. role=web")
	fs.Var(&f.targets, "machine", "report on this machine `ID` instead of a selection (repeatable)")
	fs.Var(&f.args, "arg", "an argument `k=v` of the function, e.g. name=openssl (repeatable)")
	fs.StringVar(&output, "output", "", "print `FORMAT`: table, csv or json (default table)")
	pos, err := e.parse(fs, args, reportHelp)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usageErrorf("report needs a report: patches (see cc-bench report --help)")
	}
	if pos[0] != "patches" {
		return usageErrorf("unknown report %q: want patches (see cc-bench report --help)", pos[0])
	}
	if len(pos) > 1 {
		return usageErrorf("report patches takes no arguments, got %q", pos[1])
	}
	format, err := outputFormat(e, output, formatTable, formatCSV, formatJSON)
	if err != nil {
		return err
	}
	opts, _, fargs, err := f.options()
	if err != nil {
		return err
	}
	opts.Timeout = e.g.timeout
	c, err := e.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	var replies []viewReply
	prog := startProgress(e.stderr, e.g.timeout)
	opts.Published = prog.published
	sum, err := c.Stream(e.ctx, fleet.FnInstalledSecPatches, fargs, opts, func(r bench.Reply) {
		prog.reply(r)
		replies = append(replies, newViewReply(r))
	})
	prog.stop(sum)
	if sum == nil {
		return err
	}
	rep := buildPatchReport(replies)
	var werr error
	switch format {
	case formatCSV:
		werr = rep.csv(e.stdout)
	case formatJSON:
		werr = jsonLine(e.stdout, rep.json())
	default:
		werr = rep.table(e.stdout, sum)
	}
	if werr != nil {
		return werr
	}
	if format != formatTable && isTerminal(e.stderr) {
		_ = printf(e.stderr, "%s (took %s)\n", sum.String(), tookText(sum.Took))
	}
	if sum.Expected == 0 && len(replies) == 0 {
		fmt.Fprintln(e.stderr, "no ONLINE machine matches; see which are with: cc-bench servers")
	}
	if errors.Is(err, context.Canceled) {
		return &exitError{code: exitFailure, msg: "interrupted: the report above is partial"}
	}
	if err != nil {
		return err
	}
	if !sum.AllOK() {
		return &exitError{code: exitFailure}
	}
	return nil
}

// patchReport is the fleet's pending security updates.
type patchReport struct {
	updates  []*patchRow
	machines []patchMachine // sorted by machine
}

// patchRow is one package at one available version with one CVE id (""
// when the source names none), the advisory and severity, and the
// machines that need it.
type patchRow struct {
	pkg, available, cve, advisory, severity string
	which                                   []string
}

// patchMachine is what one machine answered.
type patchMachine struct {
	r       viewReply
	source  string
	pending int
	notes   []string
}

func buildPatchReport(replies []viewReply) *patchReport {
	rep := &patchReport{}
	rows := map[[3]string]*patchRow{}
	sort.SliceStable(replies, func(i, j int) bool { return replies[i].Target() < replies[j].Target() })
	for _, r := range replies {
		m := patchMachine{r: r}
		if r.Status == bench.StatusOK {
			m.source = textOr(r.res, "source", "")
			m.notes = stringList(r.res, "notes")
			for _, el := range listOf(r.res, "pending") {
				x, _ := lookupPath(el, "name")
				name, _ := str(x)
				if name == "" { // not a package: ignored
					continue
				}
				m.pending++
				cves := stringList(el, "cves")
				if len(cves) == 0 {
					cves = []string{""}
				}
				avail, adv, sev := textOr(el, "available", ""), textOr(el, "advisory", ""), textOr(el, "severity", "")
				for _, cve := range cves {
					k := [3]string{name, avail, cve}
					row := rows[k]
					if row == nil {
						row = &patchRow{pkg: name, available: avail, cve: cve, advisory: adv, severity: sev}
						rows[k] = row
						rep.updates = append(rep.updates, row)
					}
					row.advisory, row.severity = joinNew(row.advisory, adv), joinNew(row.severity, sev)
					if !slices.Contains(row.which, r.Target()) {
						row.which = append(row.which, r.Target())
					}
				}
			}
		}
		rep.machines = append(rep.machines, m)
	}
	sort.SliceStable(rep.updates, func(i, j int) bool {
		a, b := rep.updates[i], rep.updates[j]
		if len(a.which) != len(b.which) {
			return len(a.which) > len(b.which)
		}
		if a.pkg != b.pkg {
			return a.pkg < b.pkg
		}
		if a.available != b.available {
			return a.available < b.available
		}
		return a.cve < b.cve
	})
	return rep
}

// joinNew adds s to the comma-separated list, unless it is there.
func joinNew(list, s string) string {
	switch {
	case s == "" || slices.Contains(strings.Split(list, ","), s):
		return list
	case list == "":
		return s
	}
	return list + "," + s
}

// whichText lists machines, cut after about 80 characters: "a,b … and 7 more".
func whichText(which []string) string {
	out := ""
	for i, m := range which {
		next := out
		if i > 0 {
			next += ","
		}
		next += m
		if len(next) > 80 && i > 0 {
			return fmt.Sprintf("%s … and %d more", out, len(which)-i)
		}
		out = next
	}
	return out
}

func (rep *patchReport) table(w io.Writer, sum *bench.Summary) error {
	answered, withPending := 0, 0
	for _, m := range rep.machines {
		if m.r.Status == bench.StatusOK {
			answered++
			if m.pending > 0 {
				withPending++
			}
		}
	}
	if len(rep.updates) > 0 {
		t := newTable(w, "PACKAGE", "AVAILABLE", "CVE", "ADVISORY", "SEVERITY", "MACHINES", "WHICH")
		for _, u := range rep.updates {
			t.row(u.pkg, dash(u.available), dash(u.cve), dash(u.advisory), dash(u.severity), itoa(len(u.which)), whichText(u.which))
		}
		if err := t.flush(); err != nil {
			return err
		}
	} else if answered > 0 {
		if err := printf(w, "No pending security update on the %d machine%s that answered.\n", answered, plural(answered)); err != nil {
			return err
		}
	}
	var failed []patchMachine
	var notes noteSet
	for _, m := range rep.machines {
		if m.r.Status != bench.StatusOK {
			failed = append(failed, m)
		}
		for _, n := range m.notes {
			notes.add(m.r.Target(), n)
		}
	}
	if len(failed) > 0 {
		if err := printf(w, "\nNot known (no answer, or the machine cannot tell):\n"); err != nil {
			return err
		}
		t := newTable(w, "MACHINE", "STATUS", "ERROR")
		for _, m := range failed {
			t.row(m.r.Target(), statusText(m.r.Reply), errorText(m.r.Reply))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if err := notes.print(w); err != nil {
		return err
	}
	return printf(w, "\n%d update%s pending on %d of %d machine%s that answered; %s (took %s)\n",
		len(rep.updates), plural(len(rep.updates)), withPending, answered, plural(answered), sum.String(), tookText(sum.Took))
}

func (rep *patchReport) csv(w io.Writer) error {
	rows := [][]string{{"package", "available", "cve", "advisory", "severity", "machines", "which"}}
	for _, u := range rep.updates {
		which := make([]string, len(u.which))
		for i, m := range u.which {
			which[i] = csvText(m)
		}
		rows = append(rows, []string{csvText(u.pkg), csvText(u.available), csvText(u.cve), csvText(u.advisory), csvText(u.severity),
			itoa(len(u.which)), strings.Join(which, " ")})
	}
	return writeCSV(w, rows)
}

// patchJSON is the report in --output json.
type patchJSON struct {
	Updates  []patchUpdateJSON  `json:"updates"`
	Machines []patchMachineJSON `json:"machines"`
}

type patchUpdateJSON struct {
	Package   string   `json:"package"`
	Available string   `json:"available"`
	CVE       string   `json:"cve,omitempty"`
	Advisory  string   `json:"advisory,omitempty"`
	Severity  string   `json:"severity,omitempty"`
	Machines  int      `json:"machines"`
	Which     []string `json:"which"`
}

type patchMachineJSON struct {
	Machine string       `json:"machine"`
	Status  bench.Status `json:"status"`
	Source  string       `json:"source,omitempty"`
	Pending int          `json:"pending"`
	Notes   []string     `json:"notes,omitempty"`
	Error   *fleet.Error `json:"error,omitempty"`
}

func (rep *patchReport) json() patchJSON {
	out := patchJSON{Updates: []patchUpdateJSON{}, Machines: []patchMachineJSON{}}
	for _, u := range rep.updates {
		out.Updates = append(out.Updates, patchUpdateJSON{u.pkg, u.available, u.cve, u.advisory, u.severity, len(u.which), u.which})
	}
	for _, m := range rep.machines {
		out.Machines = append(out.Machines, patchMachineJSON{m.r.Target(), m.r.Status, m.source, m.pending, m.notes, m.r.Err})
	}
	return out
}
