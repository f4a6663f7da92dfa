package controlsvc

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/fleet"
)

func TestSplitCallRecord(t *testing.T) {
	rec := fleet.AuditRecord{Kind: fleet.AuditCall, Function: "f", Args: json.RawMessage(`{"a":1}`), OK: 1201, Targets: 1201}
	for i := range 1201 {
		rec.Outcomes = append(rec.Outcomes, fleet.AuditOutcome{Machine: fmt.Sprintf("m%04d", i), Status: fleet.OutcomeOK})
	}
	parts := splitCallRecord(rec)
	if len(parts) != 3 {
		t.Fatalf("got %d parts, want 3", len(parts))
	}
	n := 0
	for i, p := range parts {
		if p.Part != i+1 || p.Parts != 3 || p.OK != 1201 || len(p.Outcomes) > fleet.AuditMaxOutcomes {
			t.Fatalf("part %d: %+v", i, p)
		}
		if (i == 0) != (p.Args != nil) {
			t.Fatalf("part %d: args %s; want them on the first part only", i, p.Args)
		}
		n += len(p.Outcomes)
	}
	if n != 1201 {
		t.Fatalf("parts hold %d outcomes, want 1201", n)
	}
	if one := splitCallRecord(fleet.AuditRecord{Outcomes: rec.Outcomes[:3]}); len(one) != 1 || one[0].Parts != 0 {
		t.Fatalf("a small call was split: %+v", one)
	}
}

func TestTruncateJSON(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{`{"a":1}`, `{"a":1}`},
		{"not json", `"not json"`},
		{`{"a":"` + strings.Repeat("x", 20) + `"}`, `"{\"a\":\"xxxx…(truncated)"`},
	} {
		if got := string(truncateJSON([]byte(tc.in), 10)); got != tc.want && !(tc.in == `{"a":1}` && got == tc.in) {
			t.Errorf("truncateJSON(%q): got %s, want %s", tc.in, got, tc.want)
		}
		if tc.in != "" && !json.Valid(truncateJSON([]byte(tc.in), 10)) {
			t.Errorf("truncateJSON(%q) is not JSON", tc.in)
		}
	}
}
