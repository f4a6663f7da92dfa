package cli

import (
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestCallNotServed: a call every selected machine answers with "no such
// function" is one error naming the function and the one meant (from the
// functions the machines serve), exit 1,
// not a 404 line per machine.
func TestCallNotServed(t *testing.T) {
	f := startFleet(t)
	web := map[string]string{"role": "web"}
	f.agent("10.0.0.1_web01", web, stacktest.Result("grep-log", "x"))
	f.agent("10.0.0.2_web02", web)
	for _, tt := range []struct {
		name string
		vars map[string]string
		args []string
		want string
	}{
		{"a built-in misspelt", f.env(), []string{"call", "current-lod"}, `cc-bench: no selected machine serves function "current-lod"; did you mean "current-load"?; see cc-bench functions`},
		{"an operator's function misspelt", f.env(), []string{"call", "grep-lg"}, `cc-bench: no selected machine serves function "grep-lg"; did you mean "grep-log"?; see cc-bench functions`},
		{"nothing near", f.env(), []string{"call", "reboot", "--where", "role=web"}, `cc-bench: no selected machine serves function "reboot"; see cc-bench functions`},
	} {
		stdout, stderr, code := cc(t, tt.vars, tt.args...)
		if code != exitFailure || strings.TrimSpace(stderr) != tt.want || strings.Contains(stdout, "404") {
			t.Errorf("%s: exit %d, stderr %q, stdout %q; want exit 1 and %q", tt.name, code, stderr, stdout, tt.want)
		}
	}
	// Served by one machine of two: the other's 404 is a line, as any
	// error.
	stdout, _, code := cc(t, f.env(), "call", "grep-log")
	if code != exitFailure || !strings.Contains(stdout, "10.0.0.2_web02  error   404") {
		t.Errorf("grep-log on one machine of two: exit %d:\n%s", code, stdout)
	}
}
