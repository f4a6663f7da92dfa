package cli

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// notServed is the one error of a call in which every expected machine
// (or session) answered that it serves no such function, instead of a
// 404 line for each: it names the function and, when one is near, the
// function meant. The names compared are the built-ins' and, for an
// admin calling machines, those the selected machines serve (asked as
// cc-bench functions does, within a short wait).
func (e *env) notServed(c *bench.Client, fn string, opts bench.CallOptions) error {
	what, names := "machine", map[string]bool{}
	if opts.Sessions != nil {
		what = "session"
	} else {
		for _, b := range fleet.BuiltinFunctions {
			names[b.Name] = true
		}
		if opts.Machines == nil {
			ctx, cancel := context.WithTimeout(e.ctx, min(e.g.timeout, 2*time.Second))
			cat, err := c.Functions(ctx, opts.Where)
			cancel()
			if err == nil { // else (a viewer, say) the built-ins alone
				for _, f := range cat.Functions {
					names[f.Name] = true
				}
			}
		}
	}
	msg := fmt.Sprintf("no selected %s serves function %q", what, fn)
	if near := nearest(fn, names); near != "" {
		msg += fmt.Sprintf("; did you mean %q?", near)
	}
	if what == "machine" {
		msg += "; see cc-bench functions"
	}
	return &exitError{code: exitFailure, msg: msg}
}

// nearest is the name closest to fn by edit distance, when close enough
// to be a typo (at most a third of its length, at least 2), or one fn
// starts; "" when none is.
func nearest(fn string, names map[string]bool) string {
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	best, bestD := "", max(2, len(fn)/3)+1
	for _, n := range sorted {
		d := bench.EditDistance(strings.ToLower(fn), strings.ToLower(n))
		if strings.HasPrefix(n, fn) && len(fn) >= 3 {
			d = min(d, 1)
		}
		if d < bestD {
			best, bestD = n, d
		}
	}
	return best
}
