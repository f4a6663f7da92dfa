package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// ErrFilterResults means a filter does not fit the results it was applied
// to: it names a field no result has (a typo: "lod1" for "load1"), or
// compares values of different types (a number with a string). The
// filter then says nothing about the results; test with errors.Is.
var ErrFilterResults = errors.New("the filter does not fit the results")

// Bounds on what a [FilterCheck] keeps to suggest a field: the field paths
// of the first results only, not deeper than this, at most this many.
const (
	checkFieldDocs  = 100
	checkFieldDepth = 8
	checkFieldMax   = 4096
)

// FilterCheck applies a filter to a call's results one by one, as
// [Filter.Match] does, and remembers what it needs to tell, once they
// are all in, whether the filter fits them at all ([FilterCheck.Err]).
// It is not safe for concurrent use. Create one with [Filter.Check].
type FilterCheck struct {
	f      *Filter
	paths  []string // the field paths the filter names, dotted, each once
	parts  [][]string
	found  []bool // found[i]: some result has paths[i]
	fields map[string]bool
	docs   int   // results checked
	bad    error // the first comparison of different types
}

// Check returns a new check of f against a call's results. A nil filter's
// check matches everything and never fails.
func (f *Filter) Check() *FilterCheck {
	c := &FilterCheck{f: f, fields: map[string]bool{}}
	if f == nil {
		return c
	}
	seen := map[string]bool{}
	walkNodes(f.root, func(n node) {
		var ops []operand
		switch n := n.(type) {
		case cmpNode:
			ops = []operand{n.l, n.r}
		case truthNode:
			ops = []operand{n.x}
		}
		for _, o := range ops {
			if o.path == nil {
				continue
			}
			p := strings.Join(o.path, ".")
			if !seen[p] {
				seen[p] = true
				c.paths = append(c.paths, p)
				c.parts = append(c.parts, o.path)
			}
		}
	})
	c.found = make([]bool, len(c.paths))
	return c
}

// Match is [Filter.Match] for one ok result, recorded for Err.
func (c *FilterCheck) Match(result json.RawMessage) bool {
	if c.f == nil {
		return true
	}
	var doc any
	if err := json.Unmarshal(result, &doc); err != nil {
		return false
	}
	return c.MatchValue(doc)
}

// MatchValue is [FilterCheck.Match] for a decoded document.
func (c *FilterCheck) MatchValue(doc any) bool {
	if c.f == nil {
		return true
	}
	c.docs++
	missing := false
	for i, parts := range c.parts {
		if !c.found[i] {
			_, c.found[i] = operand{path: parts}.value(doc)
			missing = missing || !c.found[i]
		}
	}
	if missing && c.docs <= checkFieldDocs {
		collectFields(doc, "", 0, c.fields)
	}
	if c.bad == nil {
		walkNodes(c.f.root, func(n node) {
			if cn, ok := n.(cmpNode); ok && c.bad == nil {
				c.bad = cn.typeMismatch(doc)
			}
		})
	}
	return c.f.MatchValue(doc)
}

// Err reports, once every result has been matched, whether the filter
// fits them: an error wrapping [ErrFilterResults] when no result has a
// field the filter names (with the nearest field the results have, if one
// is close), or when a result's field is compared with a value of
// another type. With no result checked it is nil: there is nothing to
// judge.
func (c *FilterCheck) Err() error {
	if c.f == nil || c.docs == 0 {
		return nil
	}
	for i, p := range c.paths {
		if c.found[i] {
			continue
		}
		hint := ""
		if s := nearest(p, c.fields); s != "" {
			hint = " (did you mean " + s + "?)"
		} else if len(c.fields) > 0 {
			hint = " (the results have " + fieldList(c.fields) + ")"
		}
		return fmt.Errorf("%w: no result has the field %s%s", ErrFilterResults, p, hint)
	}
	return c.bad
}

// walkNodes calls fn on n and every node under it.
func walkNodes(n node, fn func(node)) {
	fn(n)
	switch n := n.(type) {
	case andNode:
		walkNodes(n.l, fn)
		walkNodes(n.r, fn)
	case orNode:
		walkNodes(n.l, fn)
		walkNodes(n.r, fn)
	case notNode:
		walkNodes(n.x, fn)
	}
}

// collectFields adds the dotted paths of doc's fields under prefix to
// into (an array's first element stands for the others), within the
// bounds above.
func collectFields(doc any, prefix string, depth int, into map[string]bool) {
	if depth >= checkFieldDepth || len(into) >= checkFieldMax {
		return
	}
	switch d := doc.(type) {
	case map[string]any:
		for k, v := range d {
			if len(into) >= checkFieldMax {
				return
			}
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			into[p] = true
			collectFields(v, p, depth+1, into)
		}
	case []any:
		if len(d) > 0 && prefix != "" {
			p := prefix + ".0"
			into[p] = true
			collectFields(d[0], p, depth+1, into)
		}
	}
}

// nearest returns the field of fields closest to p (case aside) when it
// is close enough to be a typo of it: an edit distance of at most a third
// of p's length (at least 1, at most 3). Ties go to the first in order.
func nearest(p string, fields map[string]bool) string {
	limit := min(max(1, len(p)/3), 3)
	best, bestD := "", limit+1
	names := make([]string, 0, len(fields))
	for f := range fields {
		names = append(names, f)
	}
	sort.Strings(names)
	lp := strings.ToLower(p)
	for _, f := range names {
		if d := editDistance(lp, strings.ToLower(f), bestD); d < bestD {
			best, bestD = f, d
		}
	}
	return best
}

// EditDistance is the Levenshtein distance between a and b, in bytes: how
// the workbench tells "did you mean" (a field, a selector key, a
// function).
func EditDistance(a, b string) int { return editDistance(a, b, max(len(a), len(b))+1) }

// editDistance is the Levenshtein distance between a and b, or any value
// at least bound once it is known to be that large.
func editDistance(a, b string, bound int) int {
	if d := len(a) - len(b); d >= bound || -d >= bound {
		return bound
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			rowMin = min(rowMin, cur[j])
		}
		if rowMin >= bound {
			return bound
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// fieldList names the top-level fields of the results, sorted, at most
// ten.
func fieldList(fields map[string]bool) string {
	var top []string
	for f := range fields {
		if !strings.Contains(f, ".") {
			top = append(top, f)
		}
	}
	sort.Strings(top)
	if len(top) > 10 {
		top = append(top[:10], "…")
	}
	return strings.Join(top, ", ")
}

// typeMismatch returns an error when n compares, in doc, values that
// cannot be compared: an ordering (< <= > >=) of anything but two numbers
// or two strings, or an equality of two scalars of different types (a
// number with a string). A missing field or a null is not one: it is
// unknown, and does not match.
func (n cmpNode) typeMismatch(doc any) error {
	if n.re != nil {
		return nil
	}
	l, lok := n.l.value(doc)
	r, rok := n.r.value(doc)
	if !lok || !rok || l == nil || r == nil {
		return nil
	}
	lt, rt := jsonType(l), jsonType(r)
	switch n.op {
	case "==", "!=":
		if lt == rt || !isScalar(l) || !isScalar(r) {
			return nil
		}
	default:
		if lt == rt && (lt == "number" || lt == "string") {
			return nil
		}
	}
	return fmt.Errorf("%w: %s %s %s compares %s with %s", ErrFilterResults, n.l.describe(l), n.op, n.r.describe(r), article(lt), article(rt))
}

func jsonType(v any) string {
	switch v.(type) {
	case float64:
		return "number"
	case string:
		return "string"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "null"
}

func isScalar(v any) bool {
	switch v.(type) {
	case float64, string, bool:
		return true
	}
	return false
}

func article(t string) string {
	if t == "array" || t == "object" {
		return "an " + t
	}
	return "a " + t
}

// describe names o for an error: a field by its path and, when a scalar,
// the value it had (hostname ("web01")); a literal as written.
func (o operand) describe(v any) string {
	if o.path == nil {
		return literalText(v)
	}
	p := strings.Join(o.path, ".")
	if isScalar(v) {
		return p + " (" + literalText(v) + ")"
	}
	return p
}

func literalText(v any) string {
	switch v := v.(type) {
	case string:
		if r := []rune(v); len(r) > 40 {
			return strconv.Quote(string(r[:40])) + "…"
		}
		return strconv.Quote(v)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	}
	return jsonType(v)
}
