package functions

import (
	"context"
	"encoding/csv"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Fixture roots (see testdata/README.md).
const (
	debianRoot     = "testdata/debian"
	distrolessRoot = "testdata/distroless"
	alpineRoot     = "testdata/alpine"
	linuxRoot      = "testdata/linux"
)

// fixtureTime is the time the fixture tests run at: an hour after the
// debian fixture's security index was published (its InRelease says
// Date: Tue, 24 Nov 2026 00:34:33 UTC, Valid-Until a week later), so no
// result depends on the day the tests run.
var fixtureTime = time.Date(2026, 11, 24, 1, 34, 33, 0, time.UTC)

// fixtureNow is the clock ([Env.Now]) of the fixture tests.
func fixtureNow() time.Time { return fixtureTime }

// readTable reads a tab- or comma-separated expectations file and returns
// its rows without the header.
func readTable(t testing.TB, path string, sep rune) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.Comma = sep
	r.LazyQuotes = sep == '\t'
	rows, err := r.ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rows[1:]
}

// callFn builds the set for root and calls one function with body.
func callFn(t testing.TB, root, name, body string) (any, error) {
	t.Helper()
	set := New(&Env{Root: root, MachineID: "10.0.0.5_test", Version: "test", Now: fixtureNow})
	return set.Call(context.Background(), name, []byte(body))
}

// wantCode fails unless err is a *fleet.Error with code, and its
// description contains each of substrings.
func wantCode(t testing.TB, err error, code int, substrings ...string) {
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
