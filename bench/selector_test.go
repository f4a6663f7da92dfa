package bench

import (
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/fleet"
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

// TestSelectorMatchPending: for a pending machine, ip is the address its
// connection came from, never the id the stranger chose; the other terms
// read the id as ever.
func TestSelectorMatchPending(t *testing.T) {
	const id = "10.0.0.66_evil"
	for _, tt := range []struct {
		sel, from string
		want      bool
	}{
		{"ip=10.0.0.*", "127.0.0.1", false},
		{"ip=10.0.0.66", "127.0.0.1", false},
		{"ip=127.0.0.1", "127.0.0.1", true},
		{"ip=10.0.0.*", "", false},
		{"ip=", "", true},
		{"ip!=10.0.0.66", "127.0.0.1", true},
		{"ip in (10.0.0.66,127.0.0.2)", "127.0.0.1", false},
		{"ip=10.0.0.*", "10.0.0.66", true},
		{"machine=10.0.0.*,hostname=evil", "127.0.0.1", true},
		{"ip=10.0.0.* or hostname=evil", "127.0.0.1", true},
		{"", "127.0.0.1", true},
	} {
		sel, err := ParseSelector(tt.sel)
		if err != nil {
			t.Fatalf("ParseSelector(%q): %v", tt.sel, err)
		}
		if got := sel.MatchPending(id, tt.from); got != tt.want {
			t.Errorf("%q.MatchPending(%s from %q) = %v, want %v", tt.sel, id, tt.from, got, tt.want)
		}
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
	for _, s := range []string{"", "role=web", "role=web,env!=prod*", "role in (web,db)", "platform not in (alpine,deb*),os=linux or role=db"} {
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
	for _, s := range []string{"", "role=web,location=New-Brunswick", "a!=b*", "k=[", ",,", "=", "a=b=c",
		"role in (web,db) or os=linux", "a not in (x*,y);b=c", "k in ()", "k in (a,(b))"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			return
		}
		sel.MatchFacts("10.0.0.5_web01", map[string]string{"role": "web"}, &fleet.Facts{OS: "linux", CPUs: 2})
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

func TestSelectorListsOrAndFacts(t *testing.T) {
	labels := map[string]string{"role": "web", "os": "plan9"}
	facts := &fleet.Facts{OS: "linux", Platform: "debian", PlatformVersion: "12.5", Arch: "arm64", CPUs: 4, MemoryBytes: 8 << 30}
	const id = "10.0.0.5_web01"
	tests := []struct {
		sel  string
		want bool
	}{
		{"role in (web,db)", true},
		{"role in ( db , web )", true},
		{"role in (db,cache)", false},
		{"role not in (db,cache)", true},
		{"role not in (w*)", false},
		{"role IN (web)", true},
		{"platform in (debian,ubuntu)", true},
		{"platform in (ubuntu,alp*)", false},
		{"platform != alpine", true},
		{"platform!=deb*", false},
		{"arch=arm64,platform=debian", true},
		{"platform_version=12.*", true},
		{"cpus=4,memory=8589934592", true},
		{"container=", true},
		{"virtualization!=", false},
		// A label the operator set wins over the agent's fact.
		{"os=plan9", true},
		{"os=linux", false},
		// Built-in facts win over both.
		{"hostname=web01", true},
		{"role=db or platform=debian", true},
		{"role=db or platform=alpine", false},
		{"role=db;arch=arm64", true},
		{"role=db,arch=arm64 or role=web,arch=amd64", false},
		{"role=db , arch=arm64  OR  role=web , arch=arm64", true},
		{"role in (db,cache) or role in (web)", true},
		// "or" inside a word does not split.
		{"role=web,hostname=w*or*", false},
	}
	for _, tt := range tests {
		sel, err := ParseSelector(tt.sel)
		if err != nil {
			t.Errorf("ParseSelector(%q): %v", tt.sel, err)
			continue
		}
		if got := sel.MatchFacts(id, labels, facts); got != tt.want {
			t.Errorf("ParseSelector(%q).MatchFacts = %v, want %v", tt.sel, got, tt.want)
		}
	}
	// Without facts, a fact is a missing key.
	sel, _ := ParseSelector("platform!=alpine,arch=")
	if !sel.Match(id, nil) {
		t.Error("a machine without facts: platform!=alpine,arch= should hold")
	}
}

func TestParseSelectorListAndOrErrors(t *testing.T) {
	tests := []struct{ sel, wantErr string }{
		{"role in ()", "list is empty"},
		{"role in (web", "end with one"},
		{"role in (web,(db))", "end with one"},
		{"role in web", "want key=value"},
		{"role within (web)", "want key=value"},
		{"role in (web,)", "empty"},
		{"role=(web)", "may not contain ( or )"},
		{"role=web or ", "empty alternative"},
		{"role=web;;os=linux", "empty alternative"},
		{"ro(le=web", "want key=value"},
		{"role in ([web)", "bad pattern"},
	}
	for _, tt := range tests {
		_, err := ParseSelector(tt.sel)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseSelector(%q): err = %v, want one containing %q", tt.sel, err, tt.wantErr)
		}
	}
}

func TestSelectorNoMatchHint(t *testing.T) {
	servers := []fleet.Server{
		{Machine: "10.0.0.5_web01", Labels: map[string]string{"role": "web"}, Facts: &fleet.Facts{OS: "linux", Platform: "debian"}},
		{Machine: "10.0.0.6_db01", Labels: map[string]string{"role": "db"}},
	}
	if got := FleetKeys(servers); strings.Join(got, ",") != "hostname,ip,machine,os,platform,role" {
		t.Errorf("FleetKeys = %q", got)
	}
	hint := func(s string) string {
		t.Helper()
		sel, err := ParseSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		return sel.NoMatchHint(servers)
	}
	if h := hint("role=web"); h != "" {
		t.Errorf("a selector that matches: hint %q", h)
	}
	if h := hint("rol=web"); !strings.Contains(h, `no ONLINE machine has the key "rol" (did you mean "role"?)`) {
		t.Errorf("misspelt key: %q", h)
	}
	if h := hint("Platform=debian"); !strings.Contains(h, `did you mean "platform"?`) {
		t.Errorf("key in another case: %q", h)
	}
	if h := hint("zone=eu"); !strings.Contains(h, `no ONLINE machine has the key "zone"`) || strings.Contains(h, "did you mean") {
		t.Errorf("unknown key: %q", h)
	}
	if h := hint("role=cache"); !strings.Contains(h, "none of the 2 ONLINE machines") || !strings.Contains(h, "role") {
		t.Errorf("known key, no value: %q", h)
	}
	sel, _ := ParseSelector("role=web")
	if h := sel.NoMatchHint(nil); h != "no machine is ONLINE" {
		t.Errorf("empty fleet: %q", h)
	}
}
