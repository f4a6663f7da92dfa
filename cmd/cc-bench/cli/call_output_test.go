package cli

import (
	"regexp"
	"strings"
	"testing"
)

var durationRe = regexp.MustCompile(`duration_ms: \d+`)

// TestCallOutputs: the flags through a real call, with exit codes.
func TestCallOutputs(t *testing.T) {
	f := smallFleet(t)
	stdout, _, code := cc(t, f.env(), "call", "current-load", "--timeout", "500ms", "--arg", "n=1", "--show", "failed")
	if code != exitFailure {
		t.Errorf("--show failed: exit %d, want 1", code)
	}
	golden(t, "call_show_failed", stdout)

	stdout, _, code = cc(t, f.env(), "call", "current-load", "--where", "hostname=web0[12]", "--fields", "load1,load5", "--summary", "--output", "csv")
	if code != exitOK {
		t.Errorf("--output csv --summary: exit %d", code)
	}
	golden(t, "call_csv_summary", stdout)

	stdout, _, code = cc(t, f.env(), "call", "current-load", "--where", "hostname=web01", "--show", "ok", "--output", "yaml", "--fields", "load1")
	if code != exitOK {
		t.Errorf("--output yaml: exit %d", code)
	}
	golden(t, "call_yaml", durationRe.ReplaceAllString(stdout, "duration_ms: N"))

	_, stderr, code := cc(t, f.env(), "call", "current-load", "--json", "--output", "table")
	if code != exitUsage || !strings.Contains(stderr, "--json is --output json") {
		t.Errorf("--json --output table: exit %d, %q", code, stderr)
	}
}
