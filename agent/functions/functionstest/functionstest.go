// Package functionstest helps the tests of agent/functions and of
// agent/custom check a function call's error.
package functionstest

import (
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// WantCode fails unless err is a *fleet.Error with code, and its
// description contains each of substrings.
func WantCode(t testing.TB, err error, code int, substrings ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want code %d", code)
	}
	if got := fleet.CodeOf(err); got != code {
		t.Fatalf("got code %d (%v), want %d", got, err, code)
	}
	for _, s := range substrings {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}
