// Package version says which build of commandcontrol a binary is: the
// module version and the commit it was built from. `--version` of every
// binary prints it ([Parse]), the agent reports it in its facts and the
// control service answers it to the `version` control operation.
//
// The Go toolchain stamps both into the binary (runtime/debug.ReadBuildInfo:
// Main.Version, vcs.revision, vcs.modified) when it builds from a git
// checkout. A build without VCS stamping (-buildvcs=false, as CI does, or
// from a source tarball) sets them with the linker instead, as the
// Makefile's build target and deploy/docker/build.sh do:
//
//	go build -ldflags "-X github.com/commandcontrol/commandcontrol/internal/version.commit=$(git rev-parse HEAD)" ./cmd/...
//
// (and likewise version.version=v1.2.3). A value set with -X wins over
// the stamped one.
package version

import (
	"errors"
	"flag"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// Set with -ldflags "-X github.com/commandcontrol/commandcontrol/internal/version.version=…"
// (and ….commit=…): they override what the toolchain stamped.
var (
	version string
	commit  string
)

// Devel is the version of a build that carries none: `go run`, `go test`,
// or a build outside a module version and without -X.
const Devel = "devel"

// Info is one build's identity.
type Info struct {
	// Version is the module version (v1.2.3, a pseudo-version such as
	// v0.0.0-20261202103356-c5ae30f1a2b3+dirty), or [Devel].
	Version string
	// Commit is the full commit hash, "" when unknown.
	Commit string
	// Modified says the working tree had changes the commit does not
	// hold.
	Modified bool
	// Go is the toolchain that built it (go1.26.8).
	Go string
}

var (
	once sync.Once
	info Info
)

// Get returns this binary's build identity.
func Get() Info {
	overrideMu.Lock()
	o := override
	overrideMu.Unlock()
	if o != nil {
		return *o
	}
	once.Do(func() { info = read(debug.ReadBuildInfo) })
	return info
}

// read builds the Info from the build information and the -X overrides.
func read(buildInfo func() (*debug.BuildInfo, bool)) Info {
	in := Info{Version: Devel, Go: runtime.Version()}
	if bi, ok := buildInfo(); ok && bi != nil {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			in.Version = v
		}
		if bi.GoVersion != "" {
			in.Go = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				in.Commit = s.Value
			case "vcs.modified":
				in.Modified = s.Value == "true"
			}
		}
	}
	if v := strings.TrimSpace(version); v != "" {
		in.Version = v
	}
	if c := strings.TrimSpace(commit); c != "" && c != in.Commit {
		// A commit given to the linker is the one built: whether the
		// tree was modified then is not known, and not claimed (unless
		// the toolchain stamped the same commit, and said).
		in.Commit, in.Modified = c, false
	}
	return in
}

// ShortCommit is the commit's first 12 characters ("" when unknown).
func (i Info) ShortCommit() string {
	if len(i.Commit) > 12 {
		return i.Commit[:12]
	}
	return i.Commit
}

// String is the version and the short commit, as an agent reports it
// (fleet.Facts.AgentVersion) and tables show it: "v1.2.3 (c5ae30f1a2b3)", "devel (c5ae30f1a2b3,
// modified)", "v1.2.3" without a commit.
func (i Info) String() string {
	s := i.Version
	if c := i.ShortCommit(); c != "" {
		s += " (" + c
		if i.Modified {
			s += ", modified"
		}
		s += ")"
	}
	return s
}

// Line is what `program --version` prints: "cc-agent v1.2.3 commit
// c5ae30f1a2b3… go1.26.8", the full commit, "modified" when it was.
func (i Info) Line(program string) string {
	s := program + " " + i.Version
	if i.Commit != "" {
		s += " commit " + i.Commit
		if i.Modified {
			s += " modified"
		}
	}
	return s + " " + i.Go
}

// ErrRequested is what [Parse] returns when --version was given: the
// program prints [Info.Line] and exits 0 (internal/cli.Main does).
var ErrRequested = errors.New("--version requested")

// FlagUsage is the --version flag's help text.
const FlagUsage = "print the version (module version and commit) and exit"

// Parse registers --version on fs, then parses args with it. It returns
// [ErrRequested] when --version was given (and parsing otherwise
// succeeded), else what fs.Parse returns. Registering first puts --version
// in the flag set's --help.
func Parse(fs *flag.FlagSet, args []string) error {
	v := fs.Bool("version", false, FlagUsage)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *v {
		return ErrRequested
	}
	return nil
}

// Semver is the version as nats micro accepts a service's version: a
// semantic version without the leading "v" (1.2.3,
// 0.0.0-20261202103356-c5ae30f1a2b3+dirty), or 0.0.0-devel when the
// version is none.
func (i Info) Semver() string {
	v := strings.TrimPrefix(i.Version, "v")
	if !semverRE.MatchString(v) {
		return "0.0.0-" + Devel
	}
	return v
}

// semverRE is a semantic version (semver.org 2.0.0) without a leading v.
var semverRE = regexp.MustCompile(`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)` +
	`(-(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?` +
	`(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$`)

var (
	overrideMu sync.Mutex
	override   *Info
)

// Override makes [Get] return i until restore is called: for tests whose
// output holds versions (golden files), so it does not depend on the
// toolchain or the checkout.
func Override(i Info) (restore func()) {
	overrideMu.Lock()
	prev := override
	override = &i
	overrideMu.Unlock()
	return func() {
		overrideMu.Lock()
		override = prev
		overrideMu.Unlock()
	}
}
