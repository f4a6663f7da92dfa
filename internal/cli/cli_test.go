package cli

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSplitList(t *testing.T) {
	for in, want := range map[string][]string{
		"":                     nil,
		" , ,":                 nil,
		"a":                    {"a"},
		" a, b ,,c ":           {"a", "b", "c"},
		"nats://h:1,tls://h:2": {"nats://h:1", "tls://h:2"},
	} {
		if got := SplitList(in); !reflect.DeepEqual(got, want) {
			t.Errorf("SplitList(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEnvOr(t *testing.T) {
	t.Setenv("CLI_TEST_SET", "from-env")
	t.Setenv("CLI_TEST_EMPTY", "")
	if got := EnvOr("CLI_TEST_SET", "def"); got != "from-env" {
		t.Errorf("set: got %q", got)
	}
	if got := EnvOr("CLI_TEST_EMPTY", "def"); got != "def" {
		t.Errorf("empty: got %q", got)
	}
}

// TestReport: an error is one terminal-safe line naming the program; a
// help request prints nothing more.
func TestReport(t *testing.T) {
	var b strings.Builder
	Report(&b, "cc-x", fmt.Errorf("bad name %q\x1b[2J", "m"))
	if got := b.String(); !strings.HasPrefix(got, "cc-x: bad name") || strings.Contains(got, "\x1b") || strings.Count(got, "\n") != 1 {
		t.Errorf("got %q", got)
	}
	b.Reset()
	Report(&b, "cc-x", fmt.Errorf("parse: %w", flag.ErrHelp))
	Report(&b, "cc-x", nil)
	if b.Len() != 0 {
		t.Errorf("help or nil: got %q", b.String())
	}
}

// TestStartCPUProfile: the profile file is written once stopped; a path
// that cannot be created is an error naming it.
func TestStartCPUProfile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cpu.prof")
	stop, err := StartCPUProfile(p)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
		t.Errorf("profile %s: %v, size %v", p, err, fi)
	}
	if _, err := StartCPUProfile(filepath.Join(t.TempDir(), "no", "such", "dir.prof")); err == nil || !strings.Contains(err.Error(), "cpu profile") {
		t.Errorf("bad path: got %v", err)
	}
}

// TestExitCode: a help request is a success, any other error a usage
// failure.
func TestExitCode(t *testing.T) {
	for err, want := range map[error]int{
		nil:                                   0,
		flag.ErrHelp:                          0,
		fmt.Errorf("parse: %w", flag.ErrHelp): 0,
		fmt.Errorf("bad flag"):                2,
	} {
		if got := ExitCode(err); got != want {
			t.Errorf("ExitCode(%v) = %d, want %d", err, got, want)
		}
	}
}
