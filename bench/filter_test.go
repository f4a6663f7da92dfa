package bench

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const doc = `{
	"load1": 12.5, "load5": 3, "role": "web", "reboot_required": true,
	"name": "", "zero": 0, "nothing": null, "tags": ["a", "b"],
	"memory": {"used_percent": 91.2, "total": 1024},
	"disks": [{"mount": "/", "used": 40}, {"mount": "/var", "used": 95}]
}`

func TestFilterMatch(t *testing.T) {
	tests := []struct {
		expr string
		want bool
	}{
		{"load1 > 10", true},
		{"load1 >= 12.5", true},
		{"load1 < 10", false},
		{"load1 <= 12.5", true},
		{"load1 == 12.5", true},
		{"load1 != 12.5", false},
		{"10 < load1", true},
		{"load1 > load5", true},
		{"load1 > 1e1", true},
		{"load1 > -1", true},
		{"memory.used_percent > 90", true},
		{"memory.total == 1024", true},
		{"disks.1.used > 90", true},
		{"disks.1.mount == '/var'", true},
		{"disks.2.used > 90", false},
		{`role == "web"`, true},
		{`role == 'web'`, true},
		{`role != "db"`, true},
		{`role > "a"`, true},
		{`role =~ "^w.b$"`, true},
		{`role !~ "^db"`, true},
		{`load1 =~ "^12\.5$"`, true},
		{`role =~ "\d"`, false},
		{"reboot_required", true},
		{"reboot_required == true", true},
		{"not reboot_required", false},
		{"!reboot_required", false},
		{"name", false},
		{"zero", false},
		{"nothing", false},
		{"nothing == null", true},
		{"tags", true},
		{"load1 > 10 and role == 'web'", true},
		{"load1 > 10 && role == 'db'", false},
		{"load1 > 100 or role == 'web'", true},
		{"load1 > 100 || role == 'db'", false},
		{"not (load1 > 100)", true},
		{"(load1 > 100 or load5 == 3) and memory.used_percent > 90", true},
		{"load1 > 100 or load5 == 3 and role == 'db'", false}, // and binds tighter
		{"load1 > 10 or load5 == 3 and role == 'db'", true},
		// A missing field never matches, negated or not.
		{"missing > 1", false},
		{"not (missing > 1)", false},
		{"missing != 1", false},
		{"not missing", false},
		{"missing or load1 > 10", true},
		{"missing and load1 > 10", false},
		{"not (missing and load1 > 100)", true}, // false and unknown = false
		// Mixed types: equality is false, ordering unknown.
		{"role == 1", false},
		{"role != 1", true},
		{"role > 1", false},
		{"not (role > 1)", false},
		{"memory > 1", false},
		{"load1.x > 1", false},
	}
	for _, tt := range tests {
		f, err := ParseFilter(tt.expr)
		if err != nil {
			t.Errorf("ParseFilter(%q): %v", tt.expr, err)
			continue
		}
		if got := f.Match(json.RawMessage(doc)); got != tt.want {
			t.Errorf("ParseFilter(%q).Match = %v, want %v", tt.expr, got, tt.want)
		}
	}
}

func TestFilterNonObjects(t *testing.T) {
	f, _ := ParseFilter("x > 1")
	for _, d := range []string{`"text"`, `12`, `null`, `[1,2]`, `not json`} {
		if f.Match(json.RawMessage(d)) {
			t.Errorf("%s matched x > 1", d)
		}
	}
	var nilFilter *Filter
	if !nilFilter.Match(json.RawMessage(`{}`)) {
		t.Error("a nil filter should match everything")
	}
}

func TestParseFilterErrors(t *testing.T) {
	tests := []struct {
		expr    string
		col     int
		wantMsg string
	}{
		{"", 1, "empty"},
		{"load1 >", 8, `want a value after ">"`},
		{"load1 > > 2", 9, `want a value after ">"`},
		{"load1 = 10", 7, `use "=="`},
		{"load1 > 10 load5", 12, `join conditions with "and"`},
		{"(load1 > 10", 12, `want ")" to close the "(" at column 1`},
		{"load1 > 10)", 11, "closes nothing"},
		{`role == "web`, 9, "not closed"},
		{"role =~ web", 9, "quoted regular expression"},
		{`role =~ "["`, 9, "bad regular expression"},
		{"load1 > 10abc", 11, "in number"},
		{"load1 > 1.2.3", 9, "not a number"},
		{"load1 & 1", 7, `use "and"`},
		{"a..b > 1", 1, "empty part"},
		{"and", 1, `want a field`},
		{"load1 > 10 and", 15, "want a field"},
		{"# x", 1, "unexpected '#'"},
		{"é > 1", 1, "unexpected 'é'"},
		{"x > 1 and é", 11, "unexpected 'é'"},
		{strings.Repeat("(", 100) + "x" + strings.Repeat(")", 100), 66, "deeper than"},
		{strings.Repeat("not ", 100) + "x", 261, "deeper than"},
		{strings.Repeat("x", 5000), 4097, "at most"},
	}
	for _, tt := range tests {
		_, err := ParseFilter(tt.expr)
		var fe *FilterError
		if !errors.As(err, &fe) {
			t.Errorf("ParseFilter(%.30q): err = %v, want a *FilterError", tt.expr, err)
			continue
		}
		if fe.Column() != tt.col || !strings.Contains(fe.Msg, tt.wantMsg) {
			t.Errorf("ParseFilter(%.30q): column %d %q, want column %d and a message containing %q", tt.expr, fe.Column(), fe.Msg, tt.col, tt.wantMsg)
		}
	}
}

func TestFilterErrorText(t *testing.T) {
	_, err := ParseFilter("load1 >")
	if got, want := err.Error(), `filter "load1 >", column 8: want a value after ">", found the end of the filter`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{
		"load1 > 10", "memory.used_percent > 90 and not (role == 'db')", `name =~ "^web\d+"`,
		"a || b && !c", "disks.0.used >= -1.5e3", "x == null", "(", `"`, "1..2",
	} {
		f.Add(s)
	}
	var d any
	_ = json.Unmarshal([]byte(doc), &d)
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := ParseFilter(s)
		if err != nil {
			var fe *FilterError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FilterError", err)
			}
			_ = fe.Error() // must not panic, whatever the position
			return
		}
		flt.MatchValue(d)
		flt.MatchValue(nil)
	})
}

// TestFilterCheck: once a call's results are in, a filter naming a field
// no result has is an error with the nearest field, and so is a
// comparison of a number with a string; a field some results lack, a
// null, or no result at all is not.
func TestFilterCheck(t *testing.T) {
	results := []string{
		`{"load1": 0.5, "load5": 0.7, "hostname": "web01", "memory": {"used_percent": 40}, "disks": [{"used": 3}], "note": null}`,
		`{"load1": 12, "load5": 9, "hostname": "web02", "memory": {"used_percent": 95}, "disks": [{"used": 5}], "extra": true}`,
	}
	tests := []struct {
		filter string
		want   string // "" for no error
		match  int
	}{
		{"load1 > 10", "", 1},
		{"memory.used_percent >= 90 and disks.0.used > 4", "", 1},
		{"extra", "", 1},
		{"note == null", "", 1},
		{"note > 3", "", 0},
		{"lod1 > 1", "the filter does not fit the results: no result has the field lod1 (did you mean load1?)", 0},
		{"LOAD1 > 1", "the filter does not fit the results: no result has the field LOAD1 (did you mean load1?)", 0},
		{"load1 > 1 or memory.usedpercent > 3", "the filter does not fit the results: no result has the field memory.usedpercent (did you mean memory.used_percent?)", 1},
		{"zzzzzz > 1", "the filter does not fit the results: no result has the field zzzzzz (the results have disks, extra, hostname, load1, load5, memory, note)", 0},
		{`load1 > "abc"`, `the filter does not fit the results: load1 (0.5) > "abc" compares a number with a string`, 0},
		{"hostname > 3", `the filter does not fit the results: hostname ("web01") > 3 compares a string with a number`, 0},
		{"hostname == 3", `the filter does not fit the results: hostname ("web01") == 3 compares a string with a number`, 0},
		{"memory > 3", "the filter does not fit the results: memory > 3 compares an object with a number", 0},
		{`hostname =~ "^web0[1]"`, "", 1},
	}
	for _, tt := range tests {
		f, err := ParseFilter(tt.filter)
		if err != nil {
			t.Fatal(err)
		}
		c := f.Check()
		n := 0
		for _, r := range results {
			if c.Match(json.RawMessage(r)) {
				n++
			}
		}
		err = c.Err()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tt.filter, err)
		case tt.want != "" && (err == nil || err.Error() != tt.want || !errors.Is(err, ErrFilterResults)):
			t.Errorf("%s: got error %v\n want %s", tt.filter, err, tt.want)
		}
		if n != tt.match {
			t.Errorf("%s: %d matched, want %d", tt.filter, n, tt.match)
		}
	}
	// No result (every machine failed): nothing to judge.
	f, _ := ParseFilter("lod1 > 1")
	if err := f.Check().Err(); err != nil {
		t.Errorf("no results: %v", err)
	}
	var nilFilter *Filter
	if c := nilFilter.Check(); !c.Match(json.RawMessage(`{}`)) || c.Err() != nil {
		t.Error("a nil filter's check must match everything and never fail")
	}
}
