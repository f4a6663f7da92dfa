package cli

import (
	"io"
	"slices"
	"strings"

	"github.com/commandcontrol/commandcontrol/bench"
)

// --summary: for each numeric field, its min, median, max and sum across
// the ok replies, as Choria's summaries. The fields are those of
// --fields or, without, a built-in's main figures (builtinView.summary),
// or for another function every number in the results outside arrays
// (load1, memory.used_percent), in the order they first appear, at most
// maxLeafPaths of them. A field --fields names is listed even when no
// reply has it as a number.

// fieldStat is one field's numbers across the replies.
type fieldStat struct {
	field string
	vals  []float64
}

// stats gathers the numbers of each field from the ok rows.
func (v *callView) stats(rows []viewReply) []fieldStat {
	var out []fieldStat
	index := map[string]int{}
	add := func(path string, f float64) {
		i, ok := index[path]
		if !ok {
			if len(out) >= maxLeafPaths {
				return
			}
			i = len(out)
			index[path] = i
			out = append(out, fieldStat{field: path})
		}
		out[i].vals = append(out[i].vals, f)
	}
	fields := v.fields
	if len(fields) == 0 && v.builtin != nil {
		for _, p := range v.builtin.summary {
			fields = append(fields, fieldPath{p, strings.Split(p, ".")})
		}
	}
	for _, f := range v.fields {
		index[f.text] = len(out)
		out = append(out, fieldStat{field: f.text})
	}
	for _, r := range rows {
		if r.Status != bench.StatusOK {
			continue
		}
		if len(fields) > 0 {
			for _, f := range fields {
				x, _ := lookup(r.res, f.parts...)
				if n, ok := number(x); ok {
					add(f.text, n)
				}
			}
			continue
		}
		walkLeaves(r.res, "", func(path string, x any) {
			if n, ok := number(x); ok {
				add(path, n)
			}
		})
	}
	return out
}

// min, median, max and sum of s.vals; false when there are none.
func (s fieldStat) figures() (lo, med, hi, sum float64, ok bool) {
	if len(s.vals) == 0 {
		return 0, 0, 0, 0, false
	}
	v := slices.Clone(s.vals)
	slices.Sort(v)
	for _, x := range v {
		sum += x
	}
	n := len(v)
	med = v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return v[0], med, v[n-1], sum, true
}

// statsTable prints the summary under the replies.
func statsTable(w io.Writer, stats []fieldStat) error {
	if err := printf(w, "\nSummary of the ok replies:\n"); err != nil {
		return err
	}
	if len(stats) == 0 {
		return printf(w, "  no numeric field\n")
	}
	t := newTable(w, "FIELD", "REPLIES", "MIN", "MEDIAN", "MAX", "SUM")
	for _, s := range stats {
		lo, med, hi, sum, ok := s.figures()
		if !ok {
			t.row(s.field, "0", "-", "-", "-", "-")
			continue
		}
		t.row(s.field, itoa(len(s.vals)), numText(lo), numText(med), numText(hi), numText(sum))
	}
	return t.flush()
}

// statJSON is one field of the summary in JSON, YAML and CSV.
type statJSON struct {
	Field   string   `json:"field"`
	Replies int      `json:"replies"`
	Min     *float64 `json:"min,omitempty"`
	Median  *float64 `json:"median,omitempty"`
	Max     *float64 `json:"max,omitempty"`
	Sum     *float64 `json:"sum,omitempty"`
}

func statsJSON(stats []fieldStat) []statJSON {
	out := []statJSON{}
	for _, s := range stats {
		j := statJSON{Field: s.field, Replies: len(s.vals)}
		if lo, med, hi, sum, ok := s.figures(); ok {
			j.Min, j.Median, j.Max, j.Sum = &lo, &med, &hi, &sum
		}
		out = append(out, j)
	}
	return out
}

// statsCSV prints the summary alone as CSV.
func statsCSV(w io.Writer, stats []fieldStat) error {
	rows := [][]string{{"field", "replies", "min", "median", "max", "sum"}}
	for _, s := range stats {
		row := []string{csvText(s.field), itoa(len(s.vals)), "", "", "", ""}
		if lo, med, hi, sum, ok := s.figures(); ok {
			row[2], row[3], row[4], row[5] = numText(lo), numText(med), numText(hi), numText(sum)
		}
		rows = append(rows, row)
	}
	return writeCSV(w, rows)
}
