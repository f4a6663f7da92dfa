package cli

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/internal/termsafe"
)

// The output of `cc-bench call`: --output table (a rendering per built-in
// function, or a RESULT column), json (JSON Lines), yaml, csv; --fields
// picks dotted paths of the results as columns; --show keeps the ok or
// failed replies; --summary adds min, median, max and sum of numeric
// fields across the replies.

// Output formats.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
	formatCSV   = "csv"
)

// Which replies --show lists.
const (
	showAll    = "all"
	showOK     = "ok"
	showFailed = "failed"
)

// viewFlags are --output, --fields, --show and --summary.
type viewFlags struct {
	output, fields, show string
	summary              bool
}

func (v *viewFlags) add(fs *flagSet) {
	fs.StringVar(&v.output, "output", "", "print `FORMAT`: table, json (JSON Lines; --json is short for it), yaml or csv (default table)")
	fs.StringVar(&v.fields, "fields", "", "show these `PATHS` of each result: comma-separated dotted paths, e.g. load1,memory.used_percent")
	fs.StringVar(&v.show, "show", showAll, "list only the replies `WHICH` are: ok, failed (an error or no response) or all")
	fs.BoolVar(&v.summary, "summary", false, "add min, median, max and sum across the ok replies of each numeric field (of --fields, or all)")
}

// outputFormat resolves --output and the global --json.
func outputFormat(e *env, output string, allowed ...string) (string, error) {
	f := strings.ToLower(strings.TrimSpace(output))
	if e.g.json {
		if f != "" && f != formatJSON {
			return "", usageErrorf("--json is --output json: it cannot go with --output %s", output)
		}
		f = formatJSON
	}
	if f == "" {
		f = formatTable
	}
	if !slices.Contains(allowed, f) {
		return "", usageErrorf("--output %q: want %s", output, strings.Join(allowed, ", "))
	}
	return f, nil
}

// view checks the flags and returns how to print the call of fn.
func (v *viewFlags) view(e *env, fn string, sessions bool) (*callView, error) {
	format, err := outputFormat(e, v.output, formatTable, formatJSON, formatYAML, formatCSV)
	if err != nil {
		return nil, err
	}
	cv := &callView{format: format, show: v.show, summary: v.summary, sessions: sessions, builtin: builtinViews[fn]}
	if sessions {
		cv.builtin = nil // a session's function is not the agent's built-in
	}
	switch v.show {
	case showAll, showOK, showFailed:
	default:
		return nil, usageErrorf("--show %q: want ok, failed or all", v.show)
	}
	if v.fields != "" {
		if cv.fields, err = parseFields(v.fields); err != nil {
			return nil, err
		}
	}
	return cv, nil
}

// callView prints a call's replies.
type callView struct {
	format   string
	fields   []fieldPath
	show     string
	summary  bool
	sessions bool
	builtin  *builtinView // nil: not a built-in, or --fields
}

// viewReply is a reply with its result decoded.
type viewReply struct {
	bench.Reply
	res any // nil when not ok or not JSON
}

func newViewReply(r bench.Reply) viewReply {
	vr := viewReply{Reply: r}
	if r.Status == bench.StatusOK && len(r.Result) > 0 {
		vr.res, _ = decodeOrdered(r.Result)
	}
	return vr
}

// reply wraps r, decoding its result unless nothing will read it (JSON
// Lines of whole results: the result is printed as it came).
func (v *callView) reply(r bench.Reply) viewReply {
	if v.format == formatJSON && len(v.fields) == 0 && !v.summary {
		return viewReply{Reply: r}
	}
	return newViewReply(r)
}

// shows reports whether --show lists r.
func (v *callView) shows(r bench.Reply) bool {
	switch v.show {
	case showOK:
		return r.Status == bench.StatusOK
	case showFailed:
		return r.Status != bench.StatusOK
	}
	return true
}

// streams reports whether replies are printed as they come.
func (v *callView) streams() bool { return v.format == formatJSON || v.format == formatYAML }

// keeps reports whether replies must be kept until the call ends.
func (v *callView) keeps() bool { return !v.streams() || v.summary }

// viewLine is a reply in --output json or yaml; with --fields, "fields"
// holds the chosen paths instead of the whole "result".
type viewLine struct {
	callLine
	Fields json.RawMessage `json:"fields,omitempty"`
}

// stream prints one reply as a JSON line or a YAML sequence item.
func (v *callView) stream(w io.Writer, r viewReply) error {
	line := viewLine{callLine: callLine{Machine: r.Machine, Session: r.Session, App: r.App, Location: r.Location,
		Status: r.Status, Unexpected: r.Unexpected, Result: r.Result, Error: r.Err, DurationMS: r.Duration.Milliseconds()}}
	if len(v.fields) > 0 {
		line.Result = nil
		if r.Status == bench.StatusOK {
			obj := jsonObject{}
			for _, f := range v.fields {
				val, _ := lookup(r.res, f.parts...)
				obj = append(obj, jsonMember{f.text, val})
			}
			line.Fields = json.RawMessage(compactJSON(obj))
		}
	}
	if v.format == formatJSON {
		return jsonLine(w, line)
	}
	// YAML: the line without its result, decoded, the result put back
	// where it was (a result too deep to decode goes as its JSON text).
	raw := line.Result
	line.Result = nil
	b, err := json.Marshal(line)
	if err != nil {
		return err
	}
	doc, err := decodeOrdered(b)
	if err != nil {
		return err
	}
	obj, _ := doc.(jsonObject)
	if raw != nil {
		var res any = r.res
		if res == nil {
			res = string(raw)
		}
		at := len(obj)
		for i, m := range obj {
			if m.key == "error" || m.key == "duration_ms" {
				at = i
				break
			}
		}
		obj = slices.Insert(obj, at, jsonMember{"result", res})
	}
	var sb strings.Builder
	yamlItem(&sb, obj)
	_, err = io.WriteString(w, sb.String())
	return err
}

// finishStream ends JSON or YAML output: the summary, if asked for, as
// one last line or item {"summary": [...]}.
func (v *callView) finishStream(w io.Writer, rows []viewReply) error {
	if !v.summary {
		return nil
	}
	obj := struct {
		Summary []statJSON `json:"summary"`
	}{statsJSON(v.stats(rows))}
	if v.format == formatJSON {
		return jsonLine(w, obj)
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	doc, err := decodeOrdered(b)
	if err != nil {
		return err
	}
	var sb strings.Builder
	yamlItem(&sb, doc)
	_, err = io.WriteString(w, sb.String())
	return err
}

// idHead and idCells are the columns that name a reply's machine, or
// session.
func (v *callView) idHead() []string {
	if v.sessions {
		return []string{"SESSION", "APP", "LOCATION"}
	}
	return []string{"MACHINE"}
}

func (v *callView) idCells(r viewReply) []string {
	if v.sessions {
		return []string{r.Session, dash(r.App), locationText(r.Location)}
	}
	return []string{r.Machine}
}

// errorText is a failed reply's error on one line; "-" otherwise.
func errorText(r bench.Reply) string {
	if r.Err == nil {
		return "-"
	}
	return truncate(fmt.Sprintf("%d %s", r.Err.Code, strings.Join(strings.Fields(r.Err.Description), " ")), 100)
}

// table prints rows (sorted) for a person: the machines' table, the
// built-in's list and notes, and the summary.
func (v *callView) table(w io.Writer, rows []viewReply) error {
	failed := slices.ContainsFunc(rows, func(r viewReply) bool { return r.Err != nil })
	head := append(v.idHead(), "STATUS")
	var cells func(r viewReply) []string
	switch {
	case len(v.fields) > 0:
		for _, f := range v.fields {
			head = append(head, f.text)
		}
		cells = func(r viewReply) []string {
			var out []string
			for _, f := range v.fields {
				val, ok := lookup(r.res, f.parts...)
				s := valueText(val)
				if !ok || s == "" {
					s = "-"
				}
				out = append(out, truncate(s, 100))
			}
			return out
		}
	case v.builtin != nil:
		for _, c := range v.builtin.columns {
			head = append(head, c.head)
		}
		cells = func(r viewReply) []string {
			var out []string
			for _, c := range v.builtin.columns {
				s := "-"
				if r.Status == bench.StatusOK {
					s = truncate(c.text(r.res), 100)
				}
				out = append(out, s)
			}
			return out
		}
	default:
		failed = false
		head = append(head, "RESULT")
		cells = func(r viewReply) []string { return []string{resultText(r.Reply)} }
	}
	if failed {
		head = append(head, "ERROR")
	}
	if len(rows) > 0 {
		t := newTable(w, head...)
		for _, r := range rows {
			row := append(v.idCells(r), statusText(r.Reply))
			row = append(row, cells(r)...)
			if failed {
				row = append(row, errorText(r.Reply))
			}
			t.row(row...)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if v.builtin != nil && len(v.fields) == 0 {
		if err := v.listTable(w, rows); err != nil {
			return err
		}
		if err := v.notesText(w, rows); err != nil {
			return err
		}
	}
	if v.summary {
		return statsTable(w, v.stats(rows))
	}
	return nil
}

// listTable prints the built-in's list: a row per element, per machine.
func (v *callView) listTable(w io.Writer, rows []viewReply) error {
	l := v.builtin.list
	if l == nil {
		return nil
	}
	total, machines, answered := 0, 0, 0
	for _, r := range rows {
		if r.Status != bench.StatusOK {
			continue
		}
		answered++
		if n := len(listOf(r.res, l.path)); n > 0 {
			total += n
			machines++
		}
	}
	switch {
	case answered == 0:
		return nil
	case total == 0:
		return printf(w, "\n%s: none\n", l.title)
	case l.limit > 0 && total > l.limit:
		return printf(w, "\n%d %s on %d machine%s, too many to list here: narrow with %s, or list them with --output csv\n",
			total, l.what, machines, plural(machines), l.narrow)
	}
	if err := printf(w, "\n%s:\n", l.title); err != nil {
		return err
	}
	head := v.idHead()
	for _, c := range l.columns {
		head = append(head, c.head)
	}
	t := newTable(w, head...)
	for _, r := range rows {
		for _, el := range listOf(r.res, l.path) {
			row := v.idCells(r)
			for _, c := range l.columns {
				row = append(row, truncate(c.text(el), 100))
			}
			t.row(row...)
		}
	}
	return t.flush()
}

// notesText prints what the agents noted: a note many machines sent
// (an index all of them let expire) once, with the machines.
func (v *callView) notesText(w io.Writer, rows []viewReply) error {
	if v.builtin.notes == nil {
		return nil
	}
	var notes noteSet
	for _, r := range rows {
		if r.Status == bench.StatusOK {
			for _, n := range v.builtin.notes(r.res) {
				notes.add(r.Target(), n)
			}
		}
	}
	return notes.print(w)
}

// noteSet gathers notes and the machines that sent each, in order.
type noteSet struct {
	texts []string
	on    map[string][]string
}

func (s *noteSet) add(target, note string) {
	if s.on == nil {
		s.on = map[string][]string{}
	}
	if s.on[note] == nil {
		s.texts = append(s.texts, note)
	}
	if !slices.Contains(s.on[note], target) {
		s.on[note] = append(s.on[note], target)
	}
}

// print writes "Notes:" and a line per note, or nothing.
func (s *noteSet) print(w io.Writer) error {
	if len(s.texts) == 0 {
		return nil
	}
	if err := printf(w, "\nNotes:\n"); err != nil {
		return err
	}
	for _, n := range s.texts {
		if err := printf(w, "  %s: %s\n", whichText(s.on[n]), n); err != nil {
			return err
		}
	}
	return nil
}

// listOf returns the array at path.
func listOf(res any, path string) []any {
	x, _ := lookupPath(res, path)
	arr, _ := x.([]any)
	return arr
}

// csv prints rows as CSV: with --fields a row per reply, for a built-in
// with a list a row per element (and one for a machine without any), for
// a built-in its columns, else every scalar path the results hold.
// Cells, and the header (whose leaf paths are the agents' keys), are
// escaped for a terminal (termsafe), and a text cell a spreadsheet would
// run as a formula (=, +, -, @) starts with a quote.
func (v *callView) csv(w io.Writer, rows []viewReply) error {
	cw := csv.NewWriter(w)
	head := []string{"machine"}
	if v.sessions {
		head = []string{"session", "app", "location"}
	}
	head = append(head, "status")
	id := func(r viewReply) []string {
		if v.sessions {
			loc := ""
			if r.Location != nil {
				loc = locationText(r.Location)
			}
			return []string{csvText(r.Session), csvText(r.App), csvText(loc)}
		}
		return []string{csvText(r.Machine)}
	}
	errCell := func(r viewReply) string {
		if r.Err == nil {
			return ""
		}
		return csvText(fmt.Sprintf("%d %s", r.Err.Code, r.Err.Description))
	}
	var paths, listPaths []string
	switch {
	case len(v.fields) > 0:
		for _, f := range v.fields {
			paths = append(paths, f.text)
		}
	case v.builtin != nil && v.builtin.list != nil:
		paths, listPaths = v.builtin.list.csvHead, v.builtin.list.csv
	case v.builtin != nil:
		paths = v.builtin.csv
	default:
		paths = leafPaths(rows)
	}
	head = append(head, paths...)
	for _, p := range listPaths {
		if slices.Contains(paths, p) {
			p = v.builtin.list.path + "." + p // pending.source beside the result's source
		}
		head = append(head, p)
	}
	head = append(head, "error")
	for i, h := range head {
		head[i] = csvText(h) // a leaf path is the agent's keys
	}
	if err := cw.Write(head); err != nil {
		return err
	}
	for _, r := range rows {
		base := append(id(r), string(r.Status))
		for _, p := range paths {
			base = append(base, csvValue(r.res, p))
		}
		var elems []any
		if listPaths != nil {
			elems = listOf(r.res, v.builtin.list.path)
		}
		if len(elems) == 0 {
			row := append(slices.Clone(base), make([]string, len(listPaths))...)
			if err := cw.Write(append(row, errCell(r))); err != nil {
				return err
			}
			continue
		}
		for _, el := range elems {
			row := slices.Clone(base)
			for _, p := range listPaths {
				row = append(row, csvValue(el, p))
			}
			if err := cw.Write(append(row, errCell(r))); err != nil {
				return err
			}
		}
	}
	cw.Flush()
	return cw.Error()
}

// csvValue is the cell of path in v.
func csvValue(v any, path string) string {
	x, ok := lookupPath(v, path)
	if !ok {
		return ""
	}
	s := valueText(x)
	if _, isNum := x.(json.Number); isNum {
		return s
	}
	return csvText(s)
}

// csvText escapes s for a terminal and keeps a spreadsheet from taking it
// for a formula.
func csvText(s string) string {
	s = termsafe.String(s)
	if s != "" && strings.IndexByte("=+-@", s[0]) >= 0 {
		s = "'" + s
	}
	return s
}

// leafPaths are the dotted paths of every value in the ok results that is
// not an object (arrays are one value), in the order they first appear;
// at most maxLeafPaths.
func leafPaths(rows []viewReply) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range rows {
		walkLeaves(r.res, "", func(path string, _ any) {
			if !seen[path] && len(out) < maxLeafPaths {
				seen[path] = true
				out = append(out, path)
			}
		})
	}
	return out
}

// maxLeafPaths bounds the columns a result's shape can add.
const maxLeafPaths = 200

// walkLeaves calls fn for each non-object value under the objects of v.
func walkLeaves(v any, prefix string, fn func(path string, v any)) {
	obj, ok := v.(jsonObject)
	if !ok {
		return
	}
	for _, m := range obj {
		p := m.key
		if prefix != "" {
			p = prefix + "." + m.key
		}
		if sub, ok := m.value.(jsonObject); ok {
			walkLeaves(sub, p, fn)
			continue
		}
		fn(p, m.value)
	}
}

func itoa(n int) string { return fmt.Sprint(n) }

// writeCSV writes rows as CSV.
func writeCSV(w io.Writer, rows [][]string) error {
	cw := csv.NewWriter(w)
	if err := cw.WriteAll(rows); err != nil {
		return err
	}
	return cw.Error()
}

// finishMachine ends the machine-readable formats: CSV (the rows, or the
// summary alone with --summary), or JSON and YAML's summary.
func (v *callView) finishMachine(w io.Writer, rows []viewReply) error {
	if v.format != formatCSV {
		return v.finishStream(w, rows)
	}
	if v.summary {
		return statsCSV(w, v.stats(rows))
	}
	return v.csv(w, rows)
}
