package functions

import (
	"context"
	"encoding/csv"
	"os"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Fixture roots (see testdata/README.md).
const (
	debianRoot     = "testdata/debian"
	distrolessRoot = "testdata/distroless"
	alpineRoot     = "testdata/alpine"
	linuxRoot      = "testdata/linux"
)

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
	set := New(&Env{Root: root, MachineID: "10.0.0.5_test", Version: "test"})
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
