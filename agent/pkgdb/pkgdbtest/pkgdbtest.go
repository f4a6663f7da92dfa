// Package pkgdbtest helps tests read the package database fixtures of
// agent/pkgdb/testdata (see its README.md): the tests of agent/pkgdb and
// those of agent/functions, which run functions on the same fixture trees.
package pkgdbtest

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"testing"
)

// ReadTable reads a tab- or comma-separated expectations file and returns
// its rows without the header.
func ReadTable(t testing.TB, path string, sep rune) [][]string {
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

// CopyFile copies the file from to the path to, creating its folder.
func CopyFile(t testing.TB, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
