package version

import (
	"errors"
	"flag"
	"io"
	"runtime/debug"
	"strings"
	"testing"
)

func buildInfo(main string, settings ...debug.BuildSetting) func() (*debug.BuildInfo, bool) {
	return func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/commandcontrol/commandcontrol", Version: main}, Settings: settings}, true
	}
}

func TestRead(t *testing.T) {
	const rev = "c5ae30f1a2b3c4d5e6f708192a3b4c5d6e7f8091"
	vcs := []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "true"}}
	tests := []struct {
		name                string
		bi                  func() (*debug.BuildInfo, bool)
		ldVersion, ldCommit string
		want                Info
		str, line           string
	}{
		{"a tagged build", buildInfo("v1.4.0", vcs[0]), "", "",
			Info{Version: "v1.4.0", Commit: rev, Go: "go1.26.8"}, "v1.4.0 (c5ae30f1a2b3)", "cc-agent v1.4.0 commit " + rev + " go1.26.8"},
		{"a modified tree", buildInfo("(devel)", vcs...), "", "",
			Info{Version: Devel, Commit: rev, Modified: true, Go: "go1.26.8"}, "devel (c5ae30f1a2b3, modified)", "cc-agent devel commit " + rev + " modified go1.26.8"},
		{"-buildvcs=false, no -X", buildInfo("(devel)"), "", "",
			Info{Version: Devel, Go: "go1.26.8"}, "devel", "cc-agent devel go1.26.8"},
		{"-buildvcs=false with -X commit", buildInfo("(devel)"), "", "abc123",
			Info{Version: Devel, Commit: "abc123", Go: "go1.26.8"}, "devel (abc123)", "cc-agent devel commit abc123 go1.26.8"},
		{"-X of the stamped commit keeps modified", buildInfo("(devel)", vcs...), "", rev,
			Info{Version: Devel, Commit: rev, Modified: true, Go: "go1.26.8"}, "devel (c5ae30f1a2b3, modified)", "cc-agent devel commit " + rev + " modified go1.26.8"},
		{"-X wins over the stamp", buildInfo("v1.4.0", vcs...), " v2.0.0 ", "def456",
			Info{Version: "v2.0.0", Commit: "def456", Go: "go1.26.8"}, "v2.0.0 (def456)", "cc-agent v2.0.0 commit def456 go1.26.8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			version, commit = tt.ldVersion, tt.ldCommit
			defer func() { version, commit = "", "" }()
			got := read(tt.bi)
			if got != tt.want {
				t.Fatalf("read: got %+v, want %+v", got, tt.want)
			}
			if s := got.String(); s != tt.str {
				t.Errorf("String: got %q, want %q", s, tt.str)
			}
			if l := got.Line("cc-agent"); l != tt.line {
				t.Errorf("Line: got %q, want %q", l, tt.line)
			}
		})
	}
	if got := read(func() (*debug.BuildInfo, bool) { return nil, false }); got.Version != Devel || got.Go == "" {
		t.Errorf("without build info: %+v", got)
	}
}

func TestSemver(t *testing.T) {
	for v, want := range map[string]string{
		"v1.4.0": "1.4.0",
		"v0.0.0-20261202103356-c5ae30f1a2b3+dirty": "0.0.0-20261202103356-c5ae30f1a2b3+dirty",
		Devel:     "0.0.0-devel",
		"1.2":     "0.0.0-devel",
		"v1.2.3 ": "0.0.0-devel",
	} {
		if got := (Info{Version: v}).Semver(); got != want {
			t.Errorf("Semver of %q: got %q, want %q", v, got, want)
		}
	}
}

func TestParse(t *testing.T) {
	newFS := func() *flag.FlagSet {
		fs := flag.NewFlagSet("cc-x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.String("server", "", "")
		return fs
	}
	if err := Parse(newFS(), []string{"--server", "x", "--version"}); !errors.Is(err, ErrRequested) {
		t.Fatalf("--version: got %v, want ErrRequested", err)
	}
	if err := Parse(newFS(), []string{"--server", "x"}); err != nil {
		t.Fatalf("without --version: %v", err)
	}
	if err := Parse(newFS(), []string{"--version", "--nope"}); err == nil || errors.Is(err, ErrRequested) {
		t.Fatalf("a bad flag beside --version: got %v, want the flag error", err)
	}
	fs := newFS()
	var help strings.Builder
	fs.SetOutput(&help)
	if err := Parse(fs, []string{"--help"}); !errors.Is(err, flag.ErrHelp) || !strings.Contains(help.String(), "-version") {
		t.Fatalf("--help: %v, lists --version: %q", err, help.String())
	}
}

func TestOverride(t *testing.T) {
	restore := Override(Info{Version: "v9.9.9", Go: "go1"})
	if got := Get(); got.Version != "v9.9.9" {
		t.Fatalf("overridden: %+v", got)
	}
	restore()
	if got := Get(); got.Version == "v9.9.9" {
		t.Fatalf("restored: %+v", got)
	}
}
