package fleet

import (
	"slices"
	"strings"
	"testing"
)

func TestBuiltinFunctions(t *testing.T) {
	want := []BuiltinFunction{
		{"machine-info", true}, {"sw-list", true}, {"installed-sec-patches", true},
		{"current-cpu-mem-diskio", true}, {"current-load", true},
	}
	if !slices.Equal(BuiltinFunctions, want) {
		t.Fatalf("BuiltinFunctions = %+v, want %+v", BuiltinFunctions, want)
	}
	for _, f := range BuiltinFunctions {
		if f.Name == "" || strings.ContainsAny(f.Name, ".*> \t") {
			t.Errorf("built-in %q is not one subject token", f.Name)
		}
		if got, ok := Builtin(f.Name); !ok || got != f {
			t.Errorf("Builtin(%q) = (%+v, %v)", f.Name, got, ok)
		}
	}
	if _, ok := Builtin("uptime"); ok {
		t.Error("Builtin(uptime): a custom function is no built-in")
	}
}

func TestReadOnlyBuiltins(t *testing.T) {
	want := []string{"machine-info", "sw-list", "installed-sec-patches", "current-cpu-mem-diskio", "current-load"}
	got := ReadOnlyBuiltins()
	if !slices.Equal(got, want) {
		t.Fatalf("ReadOnlyBuiltins() = %q, want %q", got, want)
	}
	got[0] = "changed"
	if ReadOnlyBuiltins()[0] != "machine-info" {
		t.Fatal("ReadOnlyBuiltins returned a slice that changes the list")
	}
}
