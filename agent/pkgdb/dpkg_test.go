package pkgdb

import (
	"fmt"
	"os"
	"testing"

	"github.com/commandcontrol/commandcontrol/agent/pkgdb/pkgdbtest"
)

func TestParseDpkgStatusFixture(t *testing.T) {
	data, err := os.ReadFile(debianRoot + "/" + DpkgStatusPath)
	if err != nil {
		t.Fatal(err)
	}
	got := parseDpkgStatus(data)
	want := pkgdbtest.ReadTable(t, "testdata/expected/packages.tsv", '\t')
	if len(got) != len(want) || len(got) != 749 {
		t.Fatalf("got %d packages, want %d (749)", len(got), len(want))
	}
	sortPackages(got)
	for i, row := range want {
		g := got[i]
		gotRow := fmt.Sprintf("%s %s %s %s %s", g.Name, g.Version, g.Arch, g.Source, g.SourceVersion)
		wantRow := fmt.Sprintf("%s %s %s %s %s", row[0], row[1], row[2], row[3], row[4])
		if gotRow != wantRow {
			t.Errorf("package %d: got %q, want %q", i, gotRow, wantRow)
		}
		if g.Vendor == "" || g.Manager != "dpkg" || !g.InstallTime.IsZero() {
			t.Errorf("package %s: vendor %q manager %q install time %v", g.Name, g.Vendor, g.Manager, g.InstallTime)
		}
	}
}

func TestParseDpkgStatusStates(t *testing.T) {
	text := `Package: good
Status: install ok installed
Version: 1.0-1
Architecture: amd64
Maintainer: A <a@example.org>

Package: half
Status: install reinstreq half-installed
Version: 2.0
Architecture: amd64

Package: conf
Status: deinstall ok config-files
Version: 3.0
Architecture: all

Package: held
Status: hold ok installed
Source: heldsrc (0.9)
Version: 1:1.0+b1
Architecture: all

Package: unpacked
Status: install ok unpacked
Version: 4
`
	got := parseDpkgStatus([]byte(text))
	var names []string
	for _, p := range got {
		names = append(names, p.Name+"="+p.Version+"/"+p.Source+"="+p.SourceVersion)
	}
	want := "[good=1.0-1/good=1.0-1 held=1:1.0+b1/heldsrc=0.9]"
	if fmt.Sprint(names) != want {
		t.Errorf("got %q, want %q", fmt.Sprint(names), want)
	}
}

func TestReadDpkgStatusD(t *testing.T) {
	pkgs, found, err := readDpkgDB(distrolessRoot)
	if err != nil || !found {
		t.Fatalf("readDpkgDB: found %v, err %v", found, err)
	}
	sortPackages(pkgs)
	want := []string{
		"dash 0.5.8-2.4 amd64 dash 0.5.8-2.4",
		"libsqlite3-0 3.34.1-3 arm64 sqlite3 3.34.1-3",
		"netbase 5.4 all netbase 5.4",
	}
	if len(pkgs) != len(want) {
		t.Fatalf("got %d packages, want %d: %+v", len(pkgs), len(want), pkgs)
	}
	for i, p := range pkgs {
		got := fmt.Sprintf("%s %s %s %s %s", p.Name, p.Version, p.Arch, p.Source, p.SourceVersion)
		if got != want[i] {
			t.Errorf("got %q, want %q", got, want[i])
		}
	}
}

func TestParseApkInstalledFixture(t *testing.T) {
	data, err := os.ReadFile(alpineRoot + "/" + ApkInstalledPath)
	if err != nil {
		t.Fatal(err)
	}
	got := parseApkInstalled(data)
	want := pkgdbtest.ReadTable(t, "testdata/expected/apk-packages.csv", ',')
	if len(got) != len(want) || len(got) != 15 {
		t.Fatalf("got %d packages, want %d (15)", len(got), len(want))
	}
	for i, row := range want {
		g := got[i]
		gotRow := fmt.Sprintf("%s %s %s %s", g.Name, g.Version, g.Arch, g.Source)
		wantRow := fmt.Sprintf("%s %s %s %s", row[0], row[1], row[2], row[3])
		if gotRow != wantRow {
			t.Errorf("package %d: got %q, want %q", i, gotRow, wantRow)
		}
	}
}
