package functions

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/pkgdb"
	"github.com/commandcontrol/commandcontrol/agent/pkgdb/pkgdbtest"
)

// describeInstalled prints an installed item's apt details; installed_on
// in wall-clock time, which is what history.log holds.
func describeInstalled(p InstalledPatch) string {
	on, cl := "-", "-"
	if !p.InstalledOn.IsZero() {
		on = p.InstalledOn.Format(time.DateTime)
	}
	if !p.ChangelogDate.IsZero() {
		cl = p.ChangelogDate.Format(time.RFC3339)
	}
	return fmt.Sprintf("%s %s on=%s prev=%s changelog=%s cves=%v", p.Name, p.Version, on, p.PreviousVersion, cl, p.CVEs)
}

func TestSecPatchesAptDetails(t *testing.T) {
	res, err := callFn(t, debianRoot, "installed-sec-patches", "")
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*SecPatchesReply)
	got := map[string]string{}
	withDate := 0
	for _, p := range r.Installed {
		got[p.Name] = describeInstalled(p)
		if !p.InstalledOn.IsZero() {
			withDate++
		}
	}
	for _, want := range []string{
		// The only fixture changelog of a package installed from -security
		// (openssl, libssl3 and libexpat1 are pending; curl is not a
		// security update).
		"less 590-2.1~deb12u2 on=2025-06-24 14:37:04 prev= changelog=2024-05-02T20:30:51+02:00 cves=[]",
		"libsystemd0 252.38-1~deb12u1 on=2025-06-24 14:36:25 prev=252.36-1~deb12u1 changelog=- cves=[]",
		"libicu72 72.1-3+deb12u1 on=2026-05-09 07:29:30 prev=72.1-3 changelog=- cves=[]",
		// In the base image, before the history log begins.
		"libtasn1-6 4.19.0-2+deb12u1 on=- prev= changelog=- cves=[]",
	} {
		name, _, _ := strings.Cut(want, " ")
		if got[name] != want {
			t.Errorf("got %q, want %q", got[name], want)
		}
	}
	for _, name := range []string{"curl", "openssl", "libssl3", "libexpat1"} {
		if got[name] != "" {
			t.Errorf("%s listed as installed from -security: %q", name, got[name])
		}
	}
	if r.InstalledCount != 40 || withDate != 39 {
		t.Errorf("got %d installed, %d with a date; want 40, 39", r.InstalledCount, withDate)
	}
	if want := "39 of 40 installed security updates have no changelog entry"; len(r.Notes) != 1 || !strings.HasPrefix(r.Notes[0], want) {
		t.Errorf("got notes %q, want one starting %q", r.Notes, want)
	}
}

// securitySnapshotRoot builds a root in which the security index is as it
// was when openssl 3.0.19-1~deb12u2 and expat 2.5.0-1+deb12u1 were current:
// the fixture's dpkg status, history log and changelogs, and a small
// hand-written security index naming them (and an older curl). expat's
// changelog is also in usr/share/doc/expat, for libexpat1-dev.
func securitySnapshotRoot(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	pkgdbtest.CopyFile(t, debianRoot+"/"+pkgdb.DpkgStatusPath, filepath.Join(root, pkgdb.DpkgStatusPath))
	pkgdbtest.CopyFile(t, debianRoot+"/"+pkgdb.AptLogPath+"/history.log", filepath.Join(root, pkgdb.AptLogPath, "history.log"))
	for _, p := range []string{"openssl", "libssl3", "less", "libexpat1", "curl"} {
		pkgdbtest.CopyFile(t, docRoot+"/"+p+"/changelog.Debian.gz", filepath.Join(root, pkgdb.DocPath, p, "changelog.Debian.gz"))
	}
	pkgdbtest.CopyFile(t, docRoot+"/libexpat1/changelog.Debian.gz", filepath.Join(root, pkgdb.DocPath, "expat", "changelog.Debian.gz"))
	lists := filepath.Join(root, pkgdb.AptListsPath)
	if err := os.MkdirAll(lists, 0o755); err != nil {
		t.Fatal(err)
	}
	release := "Origin: Debian\nLabel: Debian-Security\nSuite: stable-security\nCodename: bookworm-security\nDate: Sat, 04 Apr 2026 10:00:00 UTC\n"
	index := ""
	for _, s := range [][3]string{
		{"openssl", "3.0.19-1~deb12u2", ""}, {"libssl3", "3.0.19-1~deb12u2", "openssl"},
		{"libexpat1", "2.5.0-1+deb12u1", "expat"}, {"libexpat1-dev", "2.5.0-1+deb12u1", "expat"},
		{"less", "590-2.1~deb12u2", ""}, {"curl", "7.88.1-10+deb12u8", ""},
	} {
		index += "Package: " + s[0] + "\nVersion: " + s[1] + "\nArchitecture: amd64\n"
		if s[2] != "" {
			index += "Source: " + s[2] + "\n"
		}
		index += "\n"
	}
	for name, text := range map[string]string{
		"x_dists_bookworm-security_InRelease":                  release,
		"x_dists_bookworm-security_main_binary-amd64_Packages": index,
	} {
		if err := os.WriteFile(filepath.Join(lists, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestSecPatchesAptDetailsSnapshot(t *testing.T) {
	root := securitySnapshotRoot(t)
	res, err := callFn(t, root, "installed-sec-patches", "")
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*SecPatchesReply)
	var got []string
	for _, p := range r.Installed {
		got = append(got, describeInstalled(p))
	}
	since3016 := "[CVE-2025-9230 CVE-2025-9232 CVE-2025-15467 CVE-2025-68160 CVE-2025-69418 CVE-2025-69419 CVE-2025-69420 CVE-2025-69421 " +
		"CVE-2026-22795 CVE-2026-22796 CVE-2026-28387 CVE-2026-28389 CVE-2026-28390 CVE-2026-31789 CVE-2026-31790]"
	want := []string{
		"less 590-2.1~deb12u2 on=2025-06-24 14:37:04 prev= changelog=2024-05-02T20:30:51+02:00 cves=[]",
		"libexpat1 2.5.0-1+deb12u1 on=2025-06-24 14:37:04 prev= changelog=2024-09-08T08:44:19+02:00 cves=[CVE-2024-45490 CVE-2024-45491 CVE-2024-45492]",
		"libexpat1-dev 2.5.0-1+deb12u1 on=2025-06-24 14:37:04 prev= changelog=2024-09-08T08:44:19+02:00 cves=[CVE-2024-45490 CVE-2024-45491 CVE-2024-45492]",
		"libssl3 3.0.19-1~deb12u2 on=2026-05-09 07:29:30 prev=3.0.16-1~deb12u1 changelog=2026-04-03T14:29:32+02:00 cves=" + since3016,
		"openssl 3.0.19-1~deb12u2 on=2026-05-09 07:29:30 prev=3.0.16-1~deb12u1 changelog=2026-04-03T14:29:32+02:00 cves=" + since3016,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d installed, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("got  %q\nwant %q", got[i], want[i])
		}
	}
	if len(r.Notes) != 0 {
		t.Errorf("got notes %q", r.Notes)
	}
	// The name filter narrows what is looked up.
	res, err = callFn(t, root, "installed-sec-patches", `{"name":"openssl"}`)
	if err != nil {
		t.Fatal(err)
	}
	r = res.(*SecPatchesReply)
	if len(r.Installed) != 1 || len(r.Installed[0].CVEs) != 15 {
		t.Fatalf("got %+v", r.Installed)
	}
}

func TestSecPatchesAptDetailsCached(t *testing.T) {
	root := securitySnapshotRoot(t)
	fn, _ := newSecPatches(&Env{Root: root, Now: fixtureNow})
	// A caller changing its reply does not change the cache.
	for range 2 {
		res, err := fn.Call(t.Context(), Args{"name": "openssl"})
		if err != nil {
			t.Fatal(err)
		}
		cves := res.(*SecPatchesReply).Installed[0].CVEs
		if cves[0] != "CVE-2025-9230" {
			t.Fatalf("got %q, want CVE-2025-9230 first", cves)
		}
		cves[0] = "changed"
	}
	// A new history block upgrades less to the same version (a reinstall
	// logged as an upgrade from an older build).
	h := filepath.Join(root, pkgdb.AptLogPath, "history.log")
	f, err := os.OpenFile(h, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(f, "\nStart-Date: 2026-12-01  09:00:00\nUpgrade: less:amd64 (590-2, 590-2.1~deb12u2)\nEnd-Date: 2026-12-01  09:00:03\n")
	f.Close()
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(h, later, later); err != nil {
		t.Fatal(err)
	}
	res, err := fn.Call(t.Context(), Args{"name": "less"})
	if err != nil {
		t.Fatal(err)
	}
	got := describeInstalled(res.(*SecPatchesReply).Installed[0])
	want := "less 590-2.1~deb12u2 on=2026-12-01 09:00:03 prev=590-2 changelog=2024-05-02T20:30:51+02:00 cves=[CVE-2022-48624 CVE-2024-32487]"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
