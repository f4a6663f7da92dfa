package functions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// testSet is a Set holding only test functions.
func testSet(t *testing.T) *Set {
	t.Helper()
	s := &Set{env: &Env{MachineID: "10.0.0.5_test", Logger: slog.New(slog.DiscardHandler)}, fns: map[string]Function{}}
	echo := FuncOf(Spec{Name: "echo", Args: []Arg{
		{Name: "s", Type: TypeString}, {Name: "n", Type: TypeInt},
		{Name: "f", Type: TypeFloat}, {Name: "b", Type: TypeBool},
		{Name: "req", Type: TypeString, Required: true},
	}}, func(_ context.Context, a Args) (any, error) { return a, nil })
	boom := FuncOf(Spec{Name: "boom"}, func(context.Context, Args) (any, error) { panic("kaboom") })
	fail := FuncOf(Spec{Name: "fail"}, func(context.Context, Args) (any, error) { return nil, errors.New("disk on fire") })
	for _, fn := range []Function{echo, boom, fail} {
		if err := s.Add(fn); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestSetCallErrors(t *testing.T) {
	s := testSet(t)
	tests := []struct {
		name, fn, body string
		code           int
		mention        string
	}{
		{"unknown function", "nope", "", 404, `"nope"`},
		{"bad JSON", "echo", `{"req":`, 400, "JSON object"},
		{"not an object", "echo", `[1,2]`, 400, "JSON object"},
		{"unknown arg", "echo", `{"req":"x","zzz":1}`, 400, `"zzz"`},
		{"string for int", "echo", `{"req":"x","n":"ten"}`, 400, "integer"},
		{"fraction for int", "echo", `{"req":"x","n":1.5}`, 400, "integer"},
		{"int overflow", "echo", `{"req":"x","n":1e30}`, 400, "integer"},
		{"number for string", "echo", `{"req":7}`, 400, "string"},
		{"bool wrong", "echo", `{"req":"x","b":"maybe"}`, 400, "true or false"},
		{"NaN float", "echo", `{"req":"x","f":"NaN"}`, 400, "number"},
		{"missing required", "echo", `{}`, 400, "required"},
		{"oversized", "echo", `{"req":"` + strings.Repeat("a", MaxRequestSize) + `"}`, 413, "at most"},
		{"panic", "boom", "", 500, "kaboom"},
		{"plain error", "fail", "", 500, "disk on fire"},
	}
	for _, tt := range tests {
		_, err := s.Call(context.Background(), tt.fn, []byte(tt.body))
		if got := fleet.CodeOf(err); err == nil || got != tt.code {
			t.Errorf("%s: got code %d (%v), want %d", tt.name, got, err, tt.code)
			continue
		}
		if !strings.Contains(err.Error(), tt.mention) {
			t.Errorf("%s: got %q, want it to mention %q", tt.name, err, tt.mention)
		}
	}
	// The set survives the panic.
	res, err := s.Call(context.Background(), "echo", []byte(`{"req":"still here"}`))
	if err != nil || res.(Args).String("req") != "still here" {
		t.Errorf("after a panic: got %v, %v", res, err)
	}
}

func TestParseArgsConversions(t *testing.T) {
	spec := testSet(t).fns["echo"].Spec()
	tests := []struct {
		body, want string
	}{
		{`{"req":"x","n":10}`, "n=10"},
		{`{"req":"x","n":"10"}`, "n=10"},
		{`{"req":"x","n":1e3}`, "n=1000"},
		{`{"req":"x","n":9007199254740993}`, "n=9007199254740993"}, // 2^53+1 stays exact
		{`{"req":"x","n":-5}`, "n=-5"},
		{`{"req":"x","f":"2.5"}`, "f=2.5"},
		{`{"req":"x","f":3}`, "f=3"},
		{`{"req":"x","b":"true"}`, "b=true"},
		{`{"req":"x","b":false}`, "b=false"},
		{`{"req":"x","s":"hi"}`, "s=hi"},
	}
	for _, tt := range tests {
		args, err := ParseArgs(spec, []byte(tt.body))
		if err != nil {
			t.Errorf("%s: %v", tt.body, err)
			continue
		}
		k, _, _ := strings.Cut(tt.want, "=")
		if got := k + "=" + fmtArg(args[k]); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.body, got, tt.want)
		}
	}
	for _, empty := range []string{"", "  \n", "null", "{}", " {}", "{ }"} {
		if args, err := ParseArgs(Spec{Name: "x"}, []byte(empty)); err != nil || len(args) != 0 {
			t.Errorf("body %q: %v, %v", empty, args, err)
		}
		// No arguments still misses a required one.
		if _, err := ParseArgs(spec, []byte(empty)); err == nil || !strings.Contains(err.Error(), `"req"`) {
			t.Errorf("body %q to echo: %v, want the required req named", empty, err)
		}
	}
}

func fmtArg(v any) string { return fmt.Sprint(v) }

func TestNewSkipsBrokenFactories(t *testing.T) {
	for name, f := range map[string]Factory{
		"zz-test-panics": func(*Env) (Function, error) { panic("bad factory") },
		"zz-test-nil":    func(*Env) (Function, error) { return nil, nil },
		"zz-test-error":  func(*Env) (Function, error) { return nil, errors.New("no") },
	} {
		Register(name, f)
		defer func(name string) {
			factoriesMu.Lock()
			delete(factories, name)
			factoriesMu.Unlock()
		}(name)
	}
	s := New(&Env{})
	for _, name := range []string{"zz-test-panics", "zz-test-nil", "zz-test-error"} {
		if _, ok := s.Lookup(name); ok {
			t.Errorf("%s: served, want it left out", name)
		}
	}
	if _, ok := s.Lookup("sw-list"); !ok {
		t.Error("sw-list: missing after a broken factory")
	}
}

func TestBuiltinSpecs(t *testing.T) {
	s := New(&Env{})
	var names []string
	for _, spec := range s.Specs() {
		names = append(names, spec.Name)
		if !spec.ReadOnly || spec.Help == "" || strings.Contains(spec.Help, "\n") {
			t.Errorf("%s: read-only %v, help %q; want read-only with a one-line help", spec.Name, spec.ReadOnly, spec.Help)
		}
		if fn, _ := s.Lookup(spec.Name); fn.Spec().Name != spec.Name {
			t.Errorf("%s: registered under another name", spec.Name)
		}
	}
	want := "current-cpu-mem-diskio current-load installed-sec-patches machine-info sw-list"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if err := s.Add(FuncOf(Spec{Name: "bad name!"}, nil)); err == nil {
		t.Error("Add with a bad name: got no error")
	}
	if err := s.Add(nil); err == nil {
		t.Error("Add(nil): got no error")
	}
	s.Remove("sw-list")
	if _, ok := s.Lookup("sw-list"); ok {
		t.Error("Remove: sw-list still served")
	}
}
