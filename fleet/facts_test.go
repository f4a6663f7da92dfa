package fleet

import (
	"strings"
	"testing"
	"time"
)

func TestFactsNameRoundTrip(t *testing.T) {
	f := &Facts{OS: "linux", Platform: "debian", PlatformVersion: "12.5", Kernel: "6.1.0-18-amd64", Arch: "amd64",
		CPUs: 4, MemoryBytes: 8 << 30, Virtualization: "kvm", AgentVersion: "v1.2.3", BootTime: time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)}
	name := EncodeFactsName("10.0.0.5_web01", f)
	if !strings.HasPrefix(name, "10.0.0.5_web01 {") || len(name) > MaxFactsName {
		t.Fatalf("name %q", name)
	}
	if strings.Contains(name, "container") {
		t.Errorf("empty fields are not left out: %q", name)
	}
	id, got := ParseFactsName(name)
	if id != "10.0.0.5_web01" || !FactsEqual(got, f) {
		t.Fatalf("parsed %q %+v, want %+v", id, got, f)
	}
	if FactsNameID(name) != "10.0.0.5_web01" {
		t.Errorf("FactsNameID(%q) = %q", name, FactsNameID(name))
	}
	if id, got := ParseFactsName("web01"); id != "web01" || got != nil {
		t.Errorf("a bare id: %q %+v", id, got)
	}
	if id, got := ParseFactsName("web 01"); id != "web 01" || got != nil {
		t.Errorf("a name with a space but no facts is an id as a whole: %q %+v", id, got)
	}
	if EncodeFactsName("web01", nil) != "web01" {
		t.Error("nil facts must give the bare id")
	}
}

func TestFactsNameLongFieldsCut(t *testing.T) {
	f := &Facts{OS: "linux", Kernel: strings.Repeat("k", 2000), AgentVersion: strings.Repeat("v", 900)}
	name := EncodeFactsName("web01", f)
	if len(name) > MaxFactsName {
		t.Fatalf("name is %d bytes", len(name))
	}
	_, got := ParseFactsName(name)
	if got == nil || got.OS != "linux" || len(got.Kernel) == 0 || len(got.Kernel) > MaxFactText {
		t.Fatalf("parsed %+v", got)
	}
}

func TestFactsNameMalformedIgnored(t *testing.T) {
	for _, name := range []string{
		"web01 {",
		`web01 {"os":[1,2]}`,
		`web01 {"os":"linux"} {"os":"x"}`,
		`web01 {"os":"linux"}x`,
		`web01 {"unknown":1}`,
		`web01 {"cpus":-1}`,
		`web01 {"cpus":"4"}`,
		`web01 {"os":"li\nnux"}`,
		`web01 {"os":"` + strings.Repeat("a", MaxFactText+1) + `"}`,
		`web01 {"os":"linux","platform":"` + strings.Repeat("a", MaxFactsName) + `"}`,
	} {
		id, f := ParseFactsName(name)
		if id != "web01" || f != nil {
			t.Errorf("ParseFactsName(%.40q) = %q, %+v; want web01 and no facts", name, id, f)
		}
	}
}

func TestFactKeys(t *testing.T) {
	f := &Facts{OS: "linux", CPUs: 8, MemoryBytes: 1024}
	for key, want := range map[string]string{"os": "linux", "cpus": "8", "memory": "1024", "platform": ""} {
		if v, ok := f.Fact(key); v != want || ok != (want != "") {
			t.Errorf("Fact(%s) = %q %v, want %q", key, v, ok, want)
		}
	}
	var none *Facts
	if _, ok := none.Fact("os"); ok {
		t.Error("nil facts hold no fact")
	}
}

func FuzzParseFactsName(f *testing.F) {
	f.Add(EncodeFactsName("web01", &Facts{OS: "linux", CPUs: 2}))
	f.Add("web01")
	f.Add(`web01 {"os":"linux"}`)
	f.Add(`web01 {"boot_time":"2031-01-02T03:04:05Z"}`)
	f.Fuzz(func(t *testing.T, name string) {
		id, facts := ParseFactsName(name)
		if id != FactsNameID(name) {
			t.Fatalf("id %q, FactsNameID %q", id, FactsNameID(name))
		}
		if facts == nil {
			return
		}
		if len(name) > MaxFactsName || facts.validate() != nil {
			t.Fatalf("accepted %q", name)
		}
		// What was accepted encodes and parses back to the same facts.
		if _, again := ParseFactsName(EncodeFactsName(id, facts)); !FactsEqual(again, facts) && len(EncodeFactsName(id, facts)) <= MaxFactsName {
			t.Fatalf("%+v does not round-trip: %+v", facts, again)
		}
	})
}
