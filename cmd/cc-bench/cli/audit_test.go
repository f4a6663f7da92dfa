package cli

import (
	"strings"
	"testing"
)

// TestAuditLimitNewest: --limit N shows the newest N records and says
// older ones were left out; --reverse shows the newest first; a machine
// refused again and again shows as one record (the repeats are counted
// in a record written later). Exit codes asserted.
func TestAuditLimitNewest(t *testing.T) {
	f := startFleet(t)
	for i, id := range []string{"10.0.5.1_a", "10.0.5.2_b", "10.0.5.3_c"} {
		knock(t, f, byte(40+i), id)
	}
	knock(t, f, 40, "10.0.5.1_a") // a repeat: folded, not a record of its own yet
	pollUntil(t, "the three refusals in the audit", func() bool {
		stdout, _, code := cc(t, f.env(), "audit", "--since", "0", "--log", "refused", "--limit", "0", "--json")
		return code == exitOK && strings.Count(stdout, "\n") == 3
	})
	var log strings.Builder
	for _, args := range [][]string{
		{"audit", "--since", "0", "--log", "refused", "--limit", "2"},
		{"audit", "--since", "0", "--log", "refused", "--limit", "2", "--reverse"},
		{"audit", "--since", "0", "--log", "refused", "--limit", "3"},
	} {
		stdout, stderr, code := cc(t, f.env(), args...)
		if code != exitOK {
			t.Errorf("%q: exit %d: %s", args, code, stderr)
		}
		log.WriteString("$ cc-bench " + strings.Join(args, " ") + "\n" + stdout + stderr)
	}
	golden(t, "audit_limit", log.String())
	for _, bad := range []string{"-1", "10001"} {
		if _, stderr, code := cc(t, f.env(), "audit", "--limit", bad); code != exitUsage || !strings.Contains(stderr, "--limit") {
			t.Errorf("--limit %s: exit %d, %q; want 2", bad, code, stderr)
		}
	}
}
