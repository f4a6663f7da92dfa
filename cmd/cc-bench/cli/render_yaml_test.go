package cli

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// yamlTricky are strings a YAML reader could take for something else,
// or that a terminal would act on.
var yamlTricky = []struct{ in, want string }{
	{"plain text", "plain text"},
	{"web01", "web01"},
	{"/var/lib/apt", "/var/lib/apt"},
	{"", `""`},
	{" lead", `" lead"`},
	{"trail ", `"trail "`},
	{"yes", `"yes"`},
	{"No", `"No"`},
	{"off", `"off"`},
	{"y", `"y"`},
	{"null", `"null"`},
	{"~", `"~"`},
	{"123", `"123"`},
	{"1.5", `"1.5"`},
	{"0x1F", `"0x1F"`},
	{"1e3", `"1e3"`},
	{".inf", `".inf"`},
	{"-", `"-"`},
	{"- a", `"- a"`},
	{"a: b", `"a: b"`},
	{"key:", `"key:"`},
	{"#c", `"#c"`},
	{"a #b", `"a #b"`},
	{"@x", `"@x"`},
	{"`x", "\"`x\""},
	{"!tag", `"!tag"`},
	{"&a", `"&a"`},
	{"*a", `"*a"`},
	{"|", `"|"`},
	{">", `">"`},
	{"%YAML", `"%YAML"`},
	{"[a]", `"[a]"`},
	{"{a}", `"{a}"`},
	{"'q'", `"'q'"`},
	{`say "hi"`, `"say \"hi\""`},
	{`back\slash`, `"back\\slash"`},
	{"2026-12-02", `"2026-12-02"`},
	{"1_000", `"1_000"`},
	{"two\nlines", `"two\nlines"`},
	{"tab\there", `"tab\there"`},
	{"\x1b[2Jcleared", `"\e[2Jcleared"`},
	{"\x00nul\x7f", `"\0nul\x7F"`},
	{"c1 \u009b2J", `"c1 \x9B2J"`},
	{"rtl \u202etxt.exe", `"rtl \u202Etxt.exe"`},
	{"line\u2028sep", `"line\u2028sep"`},
	{"café", `"café"`},
	{"libssl3", "libssl3"},
	{"3.0.19-1~deb12u2", `"3.0.19-1~deb12u2"`},
}

func TestYAMLStrings(t *testing.T) {
	for _, tt := range yamlTricky {
		if got := yamlString(tt.in); got != tt.want {
			t.Errorf("yamlString(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestYAMLShapes(t *testing.T) {
	doc, err := decodeOrdered([]byte(`{"z":1,"a":{"empty":{},"none":[],"list":[1,[2,3],{"k":"v","k2":null}],"b":true},"n":-1.5e3}`))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	yamlItem(&b, doc)
	want := `- z: 1
  a:
    empty: {}
    none: []
    list:
      - 1
      - - 2
        - 3
      - k: v
        k2: null
    b: true
  "n": -1.5e3
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestYAMLReadBack reads the emitter's output with PyYAML, where the
// machine has it: every tricky string comes back exactly.
func TestYAMLReadBack(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil || exec.Command(py, "-c", "import yaml").Run() != nil {
		t.Skip("no python3 with PyYAML")
	}
	obj := jsonObject{}
	var want []string
	for i, tt := range yamlTricky {
		obj = append(obj, jsonMember{tt.in + string(rune('A'+i%26)), tt.in})
		want = append(want, tt.in)
	}
	var b strings.Builder
	yamlItem(&b, jsonObject{{"values", obj}})
	script := `import sys, yaml, json
doc = yaml.safe_load(sys.stdin.read())
json.dump([[k, v] for k, v in doc[0]["values"].items()], sys.stdout)`
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = strings.NewReader(b.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("PyYAML cannot read:\n%s\n%v", b.String(), err)
	}
	var got [][2]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	for i, kv := range got {
		if kv[1] != want[i] || kv[0] != want[i]+string(rune('A'+i%26)) {
			t.Errorf("read back %q: %q, want %q", kv[0], kv[1], want[i])
		}
	}
	if len(got) != len(want) {
		t.Errorf("read back %d values, want %d", len(got), len(want))
	}
}
