package functions

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions/functionstest"
	"github.com/commandcontrol/commandcontrol/agent/pkgdb"
)

// The replies of installed-sec-patches on macOS and Windows, from the
// parsers' fixtures (see pkgdb's TestInstallHistoryAndSoftwareUpdate and
// TestWindowsPatchesParsers).

func TestMacReply(t *testing.T) {
	history, err := pkgdb.ReadInstallHistory(macosRoot)
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(macosRoot + "/softwareupdate-list.txt")
	if err != nil {
		t.Fatal(err)
	}
	pending := pkgdb.ParseSoftwareUpdateList(string(text))
	r := macReply(history, pending, nameFilter{})
	if r.InstalledCount != 3 || r.PendingCount != 2 || r.Installed[0].Name != "macOS Sonoma 14.5" || r.Pending[1].Available != "17.6" {
		t.Errorf("got %+v", r)
	}
	f := &secPatches{root: t.TempDir()}
	_, err = f.macPatches(context.Background(), nameFilter{})
	functionstest.WantCode(t, err, 503, "InstallHistory.plist")
}

func TestWindowsReply(t *testing.T) {
	read := func(name string) []byte {
		data, err := os.ReadFile(windowsRoot + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	hotfixes, err := pkgdb.DecodePSList[pkgdb.WinHotfix](read("hotfixes.json"))
	if err != nil {
		t.Fatal(err)
	}
	pending, err := pkgdb.DecodePSList[pkgdb.WinUpdate](read("pending.json"))
	if err != nil {
		t.Fatal(err)
	}
	r := windowsReply(hotfixes, pending, nameFilter{})
	if r.InstalledCount != 3 || !r.Installed[0].InstalledOn.Equal(time.Date(2024, 1, 10, 0, 0, 0, 0, time.UTC)) || !r.Installed[2].InstalledOn.IsZero() {
		t.Errorf("installed: got %+v", r.Installed)
	}
	if r.PendingCount != 2 || r.Pending[0].Advisory != "KB5034770" || r.Pending[0].Severity != "Critical" || r.Pending[1].Advisory != "KB5034686" {
		t.Errorf("pending (the Defender definitions are not a security update): got %+v", r.Pending)
	}
}
