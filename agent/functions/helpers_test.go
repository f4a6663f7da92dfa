package functions

import (
	"context"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/pkgdb"
)

// Fixture roots: /proc and cgroup trees in testdata, the package database
// trees in agent/pkgdb's testdata (see each README.md).
const (
	pkgdbData      = "../pkgdb/testdata/"
	debianRoot     = pkgdbData + "debian"
	distrolessRoot = pkgdbData + "distroless"
	alpineRoot     = pkgdbData + "alpine"
	macosRoot      = pkgdbData + "macos"
	windowsRoot    = pkgdbData + "windows"
	linuxRoot      = "testdata/linux"
)

// docRoot holds the fixture changelogs, usr/share/doc/<pkg>/changelog.Debian.gz.
const docRoot = debianRoot + "/" + pkgdb.DocPath

// fixtureTime is the time the fixture tests run at: an hour after the
// debian fixture's security index was published (its InRelease says
// Date: Tue, 24 Nov 2026 00:34:33 UTC, Valid-Until a week later), so no
// result depends on the day the tests run.
var fixtureTime = time.Date(2026, 11, 24, 1, 34, 33, 0, time.UTC)

// fixtureNow is the clock ([Env.Now]) of the fixture tests.
func fixtureNow() time.Time { return fixtureTime }

// callFn builds the set for root and calls one function with body.
func callFn(t testing.TB, root, name, body string) (any, error) {
	t.Helper()
	set := New(&Env{Root: root, MachineID: "10.0.0.5_test", Version: "test", Now: fixtureNow})
	return set.Call(context.Background(), name, []byte(body))
}
