package bench

import (
	"encoding/json"
	"strings"
	"testing"
)

var jsonValidCases = []string{
	``, ` `, `{}`, ` {} `, `[]`, `[ ]`, `{ }`, `null`, `true`, `false`, `nul`, `truex`, `"a"`, `"`, `"\"`,
	`0`, `-0`, `01`, `-`, `1.`, `1.5`, `.5`, `1e5`, `1E+5`, `1e-5`, `1e`, `1e+`, `-1.5e10`, `123abc`,
	`"\u00e9"`, `"\u00g9"`, `"\u00e"`, `"\x"`, `"\/\b\f\n\r\t\\"`, "\"a\tb\"", "\"\xff\xfe\"",
	`{"a":1}`, `{"a":1,}`, `{"a" 1}`, `{a:1}`, `{"a":1 "b":2}`, `[1,2,3]`, `[1,2,]`, `[,]`, `[1 2]`,
	`{"load1":0.3,"pressure":{"cpu":{"some_avg10":0.6}},"emulated":false}`,
	`{} {}`, `{}x`, "\t[\n1\r]\n", `[[[]]]`, `[[[]]`, `{"a":[{"b":null}]}`,
	strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000),
	strings.Repeat(`{"a":`, 10001) + "1" + strings.Repeat("}", 10001),
}

// TestValidJSONAgreesWithEncodingJSON: validJSON says what json.Valid
// says, on the edges of the grammar.
func TestValidJSONAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range jsonValidCases {
		if got, want := validJSON([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("validJSON(%.40q) = %v, json.Valid %v", c, got, want)
		}
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, c := range jsonValidCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b); got != want {
			t.Errorf("validJSON(%q) = %v, json.Valid %v", b, got, want)
		}
	})
}

// BenchmarkValidJSON: one current-load reply, validJSON against
// json.Valid.
func BenchmarkValidJSON(b *testing.B) {
	reply := []byte(`{"load1":0.3,"load5":0.54,"load15":0.91,"procs_running":3,"procs_blocked":0,"cpus":2,"pressure":{"cpu":{"some_avg10":0.64,"some_avg60":0.5,"some_avg300":0.2,"some_total":759997},"io":{"full_avg10":1.25,"full_avg60":0.5,"full_avg300":0.2,"full_total":759997,"some_avg10":1.25,"some_avg60":0.5,"some_avg300":0.2,"some_total":759997},"memory":{"full_avg10":0,"full_avg60":0,"full_avg300":0,"full_total":0,"some_avg10":0,"some_avg60":0,"some_avg300":0,"some_total":759997}}}`)
	b.Run("validJSON", func(b *testing.B) {
		for b.Loop() {
			if !validJSON(reply) {
				b.Fatal("invalid")
			}
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		for b.Loop() {
			if !json.Valid(reply) {
				b.Fatal("invalid")
			}
		}
	})
}
