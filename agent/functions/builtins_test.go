package functions

import (
	"slices"
	"sort"
	"testing"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Every registered built-in is in fleet's list of built-ins, under the
// name it registers with and with fleet's read-only flag, and every
// function in that list is registered: the control service grants the
// viewer role fleet's read-only built-ins, so the two must not drift.
func TestBuiltinsMatchFleet(t *testing.T) {
	factoriesMu.Lock()
	registered := map[string]Factory{}
	for name, f := range factories {
		registered[name] = f
	}
	factoriesMu.Unlock()
	var names, want []string
	for name, f := range registered {
		names = append(names, name)
		fn, err := build(name, f, &Env{Root: "/"})
		if err != nil {
			t.Errorf("built-in %s: %v", name, err)
			continue
		}
		spec := fn.Spec()
		b, ok := fleet.Builtin(name)
		switch {
		case !ok:
			t.Errorf("built-in %s is not in fleet.BuiltinFunctions: add it there", name)
		case spec.Name != name:
			t.Errorf("built-in %s: its spec says name %q", name, spec.Name)
		case spec.ReadOnly != b.ReadOnly:
			t.Errorf("built-in %s: spec read-only %v, fleet says %v", name, spec.ReadOnly, b.ReadOnly)
		}
	}
	for _, b := range fleet.BuiltinFunctions {
		want = append(want, b.Name)
	}
	sort.Strings(names)
	sort.Strings(want)
	if !slices.Equal(names, want) {
		t.Errorf("registered built-ins %q, fleet.BuiltinFunctions %q", names, want)
	}
}
