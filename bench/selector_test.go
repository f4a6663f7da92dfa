package bench

import (
	"strings"
	"testing"
)

func TestSelectorMatch(t *testing.T) {
	labels := map[string]string{"role": "web", "location": "New-Brunswick", "env": "prod"}
	const id = "10.0.0.5_web01"
	tests := []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"   ", true},
		{"role=web", true},
		{"role=db", false},
		{"role!=db", true},
		{"role!=web", false},
		{"role=web,location=New-Brunswick", true},
		{"role=web, location=New-Jersey", false},
		{" role = web ", true},
		{"role=w*", true},
		{"role=w?b", true},
		{"role=[a-v]*", false},
		{"role!=w*", false},
		{"missing=x", false},
		{"missing!=x", true},
		{"missing=", true},
		{"env=", false},
		{"env!=", true},
		{"machine=10.0.0.5_web01", true},
		{"machine=10.0.0.*", true},
		{"ip=10.0.0.5", true},
		{"ip=10.0.0.6", false},
		{"hostname=web01", true},
		{"hostname=web*,ip=10.*", true},
		{"hostname=db*", false},
	}
	for _, tt := range tests {
		sel, err := ParseSelector(tt.sel)
		if err != nil {
			t.Errorf("ParseSelector(%q): %v", tt.sel, err)
			continue
		}
		if got := sel.Match(id, labels); got != tt.want {
			t.Errorf("ParseSelector(%q).Match = %v, want %v", tt.sel, got, tt.want)
		}
	}
}

func TestSelectorFactsOfIDWithoutUnderscore(t *testing.T) {
	sel, _ := ParseSelector("ip=web01,hostname=")
	if !sel.Match("web01", nil) {
		t.Error(`id "web01": want ip "web01" and hostname ""`)
	}
}

func TestParseSelectorErrors(t *testing.T) {
	tests := []struct{ sel, wantErr string }{
		{"role", `selector term "role": want key=value`},
		{"role=web,", "empty term"},
		{"role=web,,env=prod", "empty term"},
		{"=web", "key before"},
		{"!=web", "key before"},
		{"ro le=web", "may not contain"},
		{"ro*=web", "may not contain"},
		{"role!web", "want key=value"},
		{"role=[web", "bad pattern"},
		{strings.Repeat("a=b,", 2000), "at most"},
	}
	for _, tt := range tests {
		_, err := ParseSelector(tt.sel)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseSelector(%.30q): err = %v, want one containing %q", tt.sel, err, tt.wantErr)
		}
	}
}

func TestSelectorString(t *testing.T) {
	for _, s := range []string{"", "role=web", "role=web,env!=prod*"} {
		sel, err := ParseSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := sel.String(); got != s {
			t.Errorf("String() = %q, want %q", got, s)
		}
	}
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"", "role=web,location=New-Brunswick", "a!=b*", "k=[", ",,", "=", "a=b=c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			return
		}
		sel.Match("10.0.0.5_web01", map[string]string{"role": "web"})
		// What String prints parses to the same selector.
		again, err := ParseSelector(sel.String())
		if err != nil {
			t.Fatalf("String() %q of %q does not parse: %v", sel.String(), s, err)
		}
		if again.String() != sel.String() {
			t.Fatalf("round trip %q → %q", sel.String(), again.String())
		}
	})
}
