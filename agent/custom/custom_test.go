//go:build !windows

package custom

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/agent/functions/functionstest"
)

// writeDef writes a definition file into dir.
func writeDef(t testing.TB, dir, file, text string) string {
	t.Helper()
	p := filepath.Join(dir, file)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// customSet serves the definitions of dir on a set with no built-ins
// needed; it fails the test on a definition error.
func customSet(t testing.TB, defs ...string) *functions.Set {
	t.Helper()
	dir := t.TempDir()
	for i, d := range defs {
		writeDef(t, dir, fmt.Sprintf("f%d.json", i), d)
	}
	s := functions.New(&functions.Env{Root: t.TempDir(), MachineID: "10.0.0.5_test"})
	if _, errs := NewLoader(s).LoadDir(dir); len(errs) > 0 {
		t.Fatal(errs)
	}
	return s
}

func TestLoadDefinitionsNamesFileAndField(t *testing.T) {
	dir := t.TempDir()
	writeDef(t, dir, "a-good.json", `{"name":"disk-free","description":"df","command":["/bin/df","-P","{{path}}"],
		"args":[{"name":"path","type":"string","required":true,"pattern":"/[a-z/]*"}],"timeout":"5s","role":"viewer","read_only":true}`)
	writeDef(t, dir, "notes.txt", "not a definition")
	writeDef(t, dir, ".hidden.json", "{")
	bad := map[string]struct{ text, field, want string }{
		"b-typo.json":     {`{"name":"x1","command":["/bin/true"],"tmeout":"5s"}`, "", `unknown field "tmeout"`},
		"c-type.json":     {`{"name":"x2","command":"/bin/true"}`, "command", "want []string"},
		"d-role.json":     {`{"name":"x3","command":["/bin/true"],"role":"root"}`, "role", "unknown role"},
		"e-viewer.json":   {`{"name":"x4","command":["/bin/true"],"role":"viewer"}`, "role", "read_only"},
		"f-ph.json":       {`{"name":"x5","command":["/bin/echo","{{nope}}"]}`, "command[1]", "{{nope}}"},
		"g-dup.json":      {`{"name":"disk-free","command":["/bin/true"]}`, "name", "already defined in"},
		"h-builtin.json":  {`{"name":"sw-list","command":["/bin/true"]}`, "name", "built-in"},
		"i-json.json":     {`{"name":`, "", "not a JSON definition"},
		"j-argtype.json":  {`{"name":"x6","command":["/bin/true"],"args":[{"name":"n","type":"number"}]}`, "args[0].type", "unknown type"},
		"k-name.json":     {`{"name":"a.b","command":["/bin/true"]}`, "name", "only letters"},
		"l-timeout.json":  {`{"name":"x7","command":["/bin/true"],"timeout":"soon"}`, "timeout", "invalid duration"},
		"m-prog.json":     {`{"name":"x8","command":["{{p}}"],"args":[{"name":"p"}]}`, "command[0]", "program itself"},
		"n-pattern.json":  {`{"name":"x9","command":["/bin/true"],"args":[{"name":"p","pattern":"("}]}`, "args[0].pattern", "missing closing"},
		"o-output.json":   {`{"name":"x10","command":["/bin/true"],"output":"xml"}`, "output", "unknown output"},
		"p-empty.json":    {`{"name":"x11","command":[]}`, "command", "as a list"},
		"q-twovals.json":  {`{"name":"x12","command":["/bin/true"]} {}`, "", "one definition per file"},
		"r-limit.json":    {`{"name":"x13","command":["/bin/true"],"max_output_bytes":100000000000}`, "max_output_bytes", "want 1 to"},
		"s-argdup.json":   {`{"name":"x14","command":["/bin/true"],"args":[{"name":"a"},{"name":"a"}]}`, "args[1].name", "twice"},
		"t-env.json":      {`{"name":"x15","command":["/bin/true"],"env":{"A=B":"c"}}`, "env", "bad variable"},
		"u-negative.json": {`{"name":"x16","command":["/bin/true"],"max_concurrent":-1}`, "max_concurrent", "negative"},
	}
	for file, b := range bad {
		writeDef(t, dir, file, b.text)
	}
	defs, errs := LoadDefinitions(dir)
	if len(defs) != 1 || defs[0].Name != "disk-free" {
		t.Fatalf("got %d definitions %+v, want disk-free only", len(defs), defs)
	}
	d := defs[0]
	if time.Duration(d.Timeout) != 5*time.Second || d.MaxOutputBytes != DefaultOutputBytes || d.MaxConcurrent != DefaultMaxConcurrent ||
		d.Output != OutputAuto || d.File != filepath.Join(dir, "a-good.json") {
		t.Errorf("defaults: got %+v", d)
	}
	if got := ViewerFunctions(defs); fmt.Sprint(got) != "[disk-free]" {
		t.Errorf("ViewerFunctions = %v, want [disk-free]", got)
	}
	if len(errs) != len(bad) {
		t.Errorf("got %d errors, want %d: %v", len(errs), len(bad), errs)
	}
	for _, err := range errs {
		var de *DefinitionError
		if !errors.As(err, &de) {
			t.Fatalf("error %v is not a *DefinitionError", err)
		}
		b, ok := bad[filepath.Base(de.File)]
		if !ok {
			t.Errorf("error for an unexpected file: %v", err)
			continue
		}
		if de.Field != b.field || !strings.Contains(err.Error(), b.want) || !strings.Contains(err.Error(), de.File) {
			t.Errorf("%s: got field %q, error %q; want field %q and %q", filepath.Base(de.File), de.Field, err, b.field, b.want)
		}
	}
	if defs, errs := LoadDefinitions(filepath.Join(dir, "missing")); defs != nil || errs != nil {
		t.Errorf("missing dir: got %v %v, want nothing", defs, errs)
	}
}

func TestCustomFunctionOutputs(t *testing.T) {
	s := customSet(t,
		`{"name":"text","command":["/bin/sh","-c","echo hello; echo warn >&2"],"read_only":true}`,
		`{"name":"js","command":["/bin/sh","-c","echo '{\"a\": [1, 2]}'"]}`,
		`{"name":"num","command":["/bin/echo","42"]}`,
		`{"name":"must-json","command":["/bin/echo","nope"],"output":"json"}`,
		`{"name":"as-text","command":["/bin/echo","{}"],"output":"text"}`,
		`{"name":"fails","command":["/bin/sh","-c","echo line1 >&2; echo 'it broke' >&2; exit 3"]}`,
		`{"name":"missing","command":["/no/such/program"]}`,
	)
	res, err := s.Call(t.Context(), "text", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprintf("%+v", res), `&{Stdout:hello
 Stderr:warn
 ExitCode:0}`; got != want {
		t.Errorf("text: got %q, want %q", got, want)
	}
	res, err = s.Call(t.Context(), "js", nil)
	if b, _ := json.Marshal(res); err != nil || string(b) != `{"a":[1,2]}` {
		t.Errorf("json: got %s %v, want the object passed through", b, err)
	}
	res, _ = s.Call(t.Context(), "num", nil)
	if o, ok := res.(*CommandOutput); !ok || o.Stdout != "42\n" {
		t.Errorf("a bare JSON number in auto mode: got %#v, want it wrapped as text", res)
	}
	_, err = s.Call(t.Context(), "must-json", nil)
	functionstest.WantCode(t, err, 500, "not JSON")
	res, _ = s.Call(t.Context(), "as-text", nil)
	if o, ok := res.(*CommandOutput); !ok || o.Stdout != "{}\n" {
		t.Errorf("output text: got %#v, want {} wrapped", res)
	}
	_, err = s.Call(t.Context(), "fails", nil)
	functionstest.WantCode(t, err, 500, "exited with status 3", "line1 | it broke")
	_, err = s.Call(t.Context(), "missing", nil)
	functionstest.WantCode(t, err, 503, "/no/such/program", "not found")
}

func TestCustomFunctionArgumentsReachArgvLiterally(t *testing.T) {
	s := customSet(t, `{"name":"echo-args","command":["/bin/sh","-c","for a; do printf '<%s>\\n' \"$a\"; done","sh",
			"--name={{name}}","{{n}}","{{f}}","{{b}}","{{opt}}"],
		"args":[{"name":"name","type":"string","required":true},{"name":"n","type":"int"},{"name":"f","type":"float"},
			{"name":"b","type":"bool"},{"name":"opt","type":"string"}]}`)
	evil := "x; rm -rf / $(id) `id` | cat && echo hi > /tmp/f * ' \" \\ \n second"
	body, _ := json.Marshal(map[string]any{"name": evil, "n": "7", "f": 2.5, "b": true})
	res, err := s.Call(t.Context(), "echo-args", body)
	if err != nil {
		t.Fatal(err)
	}
	want := "<--name=" + evil + ">\n<7>\n<2.5>\n<true>\n"
	if got := res.(*CommandOutput).Stdout; got != want {
		t.Errorf("got %q, want %q (opt absent: its element left out)", got, want)
	}
	_, err = s.Call(t.Context(), "echo-args", []byte(`{"name":"a","n":"seven"}`))
	functionstest.WantCode(t, err, 400, `"n"`, "integer")
	_, err = s.Call(t.Context(), "echo-args", []byte(`{"name":"a","bogus":1}`))
	functionstest.WantCode(t, err, 400, `"bogus"`)
	_, err = s.Call(t.Context(), "echo-args", []byte(`{}`))
	functionstest.WantCode(t, err, 400, `"name"`, "required")
	_, err = s.Call(t.Context(), "echo-args", []byte(`{"name":"`+strings.Repeat("a", functions.MaxRequestSize)+`"}`))
	functionstest.WantCode(t, err, 413)
}

func TestCustomFunctionPattern(t *testing.T) {
	s := customSet(t, `{"name":"svc","command":["/bin/echo","{{unit}}"],"args":[{"name":"unit","pattern":"[a-z0-9@][a-z0-9@.-]*"}]}`)
	if _, err := s.Call(t.Context(), "svc", []byte(`{"unit":"nginx.service"}`)); err != nil {
		t.Fatal(err)
	}
	_, err := s.Call(t.Context(), "svc", []byte(`{"unit":"--help"}`))
	functionstest.WantCode(t, err, 400, "does not match")
	_, err = s.Call(t.Context(), "svc", []byte(`{"unit":"ok\nbad"}`))
	functionstest.WantCode(t, err, 400, "does not match")
}

// alive reports whether process pid exists.
func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func readPid(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestCustomFunctionHangIsKilled(t *testing.T) {
	pids := t.TempDir()
	s := customSet(t, fmt.Sprintf(`{"name":"hang","timeout":"300ms",
		"command":["/bin/sh","-c","sleep 60 & echo $! > %[1]s/child; echo $$ > %[1]s/parent; wait"]}`, pids))
	start := time.Now()
	_, err := s.Call(t.Context(), "hang", nil)
	functionstest.WantCode(t, err, 504, "300ms", "killed")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the call took %v", d)
	}
	for _, f := range []string{"parent", "child"} {
		pid := readPid(t, filepath.Join(pids, f))
		deadline := time.Now().Add(2 * time.Second)
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // reaped by init shortly after the kill
		}
		if alive(pid) {
			t.Errorf("%s process %d still runs after the timeout", f, pid)
		}
	}
}

func TestCustomFunctionFloodIs413(t *testing.T) {
	s := customSet(t, `{"name":"flood","max_output_bytes":4096,"timeout":"10s","command":["/bin/sh","-c","while :; do echo xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; done"]}`)
	start := time.Now()
	_, err := s.Call(t.Context(), "flood", nil)
	functionstest.WantCode(t, err, 413, "4096", "killed")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the flood was stopped after %v", d)
	}
	// The agent is unharmed: the same function answers again.
	_, err = s.Call(t.Context(), "flood", nil)
	functionstest.WantCode(t, err, 413)
}

func TestCustomFunctionConcurrencyLimit(t *testing.T) {
	// The first call marks that it is running, so the second is made
	// only while the first holds the slot.
	started := filepath.Join(t.TempDir(), "started")
	s := customSet(t, `{"name":"slow","max_concurrent":1,"timeout":"5s","command":["/bin/sh","-c","echo > \"$0\"; sleep 2",`+strconv.Quote(started)+`]}`)
	done := make(chan error)
	go func() { _, err := s.Call(t.Context(), "slow", nil); done <- err }()
	deadline := time.Now().Add(5 * time.Second)
	for _, err := os.Stat(started); err != nil; _, err = os.Stat(started) {
		if time.Now().After(deadline) {
			t.Fatal("the first call did not start within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err := s.Call(t.Context(), "slow", nil)
	functionstest.WantCode(t, err, 503, "max_concurrent")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestCustomFunctionEnvIsScrubbed(t *testing.T) {
	t.Setenv("CC_TEST_SECRET", "hunter2")
	s := customSet(t, `{"name":"env","command":["/usr/bin/env"],"env":{"EXTRA":"yes"}}`)
	res, err := s.Call(t.Context(), "env", nil)
	if err != nil {
		t.Fatal(err)
	}
	out := res.(*CommandOutput).Stdout
	for _, want := range []string{"CC_FUNCTION=env\n", "CC_MACHINE_ID=10.0.0.5_test\n", "EXTRA=yes\n", "PATH=/usr/local/sbin:"} {
		if !strings.Contains(out, want) {
			t.Errorf("environment lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter2") {
		t.Errorf("the agent's environment leaked:\n%s", out)
	}
}

func TestWatchDirReloadsWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	s := functions.New(&functions.Env{Root: t.TempDir()})
	reload := make(chan struct{}, 1)
	changes := make(chan struct{}, 10)
	l := NewLoader(s)
	go l.WatchDir(t.Context(), dir, 20*time.Millisecond, reload, func() { changes <- struct{}{} })
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	served := func(name string) bool { _, ok := s.Lookup(name); return ok }
	writeDef(t, dir, "hi.json", `{"name":"hi","command":["/bin/echo","hi"]}`)
	writeDef(t, dir, "bad.json", `{"name":"bad","command":["/bin/echo"],"timeout":[]}`)
	waitFor("hi to be served", func() bool { return served("hi") })
	if served("bad") {
		t.Error("a bad definition is served")
	}
	res, err := s.Call(t.Context(), "hi", nil)
	if err != nil || res.(*CommandOutput).Stdout != "hi\n" {
		t.Fatalf("got %v %v", res, err)
	}
	writeDef(t, dir, "hi.json", `{"name":"hi","command":["/bin/echo","hello again"],"description":"changed"}`)
	waitFor("hi to change", func() bool { return l.Definitions()["hi"].Description == "changed" })
	if err := os.Remove(filepath.Join(dir, "hi.json")); err != nil {
		t.Fatal(err)
	}
	waitFor("hi to go", func() bool { return !served("hi") })
	if !served("sw-list") {
		t.Error("a reload removed a built-in")
	}
	// A reload request is honoured even when nothing looks changed.
	reload <- struct{}{}
	if len(changes) < 3 {
		t.Errorf("onChange ran %d times, want at least 3", len(changes))
	}
}

func TestSetCustomKeepsGoFunctions(t *testing.T) {
	s := functions.New(&functions.Env{Root: t.TempDir()})
	if err := s.Add(functions.FuncOf(functions.Spec{Name: "mine"}, func(_ context.Context, _ functions.Args) (any, error) { return "go", nil })); err != nil {
		t.Fatal(err)
	}
	_, errs := NewLoader(s).Set([]Definition{{Name: "mine", Command: []string{"/bin/true"}, MaxConcurrent: 1}})
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "already served") {
		t.Errorf("got %v, want a refusal", errs)
	}
	if res, _ := s.Call(t.Context(), "mine", nil); res != "go" {
		t.Errorf("the Go function was replaced: %v", res)
	}
}

// Definitions lists the definitions being served, by name.
func (l *Loader) Definitions() map[string]Definition {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]Definition, len(l.served))
	for k, v := range l.served {
		if fn, ok := l.set.Lookup(k); ok && fn == v.fn {
			out[k] = v.def
		}
	}
	return out
}
