package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrintKeyCreatesAKey(t *testing.T) {
	key := filepath.Join(t.TempDir(), "agent.nk")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--key", key, "--id", "10.0.0.5_web01", "--print-key"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "machine: 10.0.0.5_web01") || !strings.Contains(out.String(), "key:     U") {
		t.Fatalf("got %q", out.String())
	}
	fi, err := os.Stat(key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v mode %v, want 0600", err, fi.Mode().Perm())
	}
	var again bytes.Buffer
	if err := run(context.Background(), []string{"--key", key, "--id", "10.0.0.5_web01", "--print-key"}, &again, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if again.String() != out.String() {
		t.Fatalf("second start changed the key: %q then %q", out.String(), again.String())
	}
}

func TestBadInputNamesTheProblem(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.nk")
	if err := os.WriteFile(open, []byte("SUAM…\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	notSeed := filepath.Join(dir, "junk.nk")
	if err := os.WriteFile(notSeed, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--key", filepath.Join(dir, "a.nk"), "--id", "bad id"}, "machine id"},
		{[]string{"--key", open, "--id", "x"}, "chmod 600"},
		{[]string{"--key", notSeed, "--id", "x"}, "does not hold"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"stray"}, `unexpected argument "stray"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			err := run(context.Background(), append(tt.args, "--print-key"), &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}
