package functions

import (
	"fmt"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/pkgdb"
	"github.com/commandcontrol/commandcontrol/agent/pkgdb/pkgdbtest"
)

// rpmFixtures are the rpm databases of all three formats, copied from
// shared/fixtures/rpm, with the packages.csv each was checked against.
var rpmFixtures = []struct {
	root, csv string
	count     int
}{
	{pkgdbData + "rpm-sqlite", pkgdbData + "expected/rpm-sqlite.csv", 129},
	{pkgdbData + "rpm-ndb", pkgdbData + "expected/rpm-ndb.csv", 35},
	{pkgdbData + "rpm-bdb", pkgdbData + "expected/rpm-bdb.csv", 1},
	{pkgdbData + "rpm-bdb-epoch", pkgdbData + "expected/rpm-bdb-epoch.csv", 1},
}

func TestSwListRpmAllFormats(t *testing.T) {
	for _, fx := range rpmFixtures {
		t.Run(fx.root, func(t *testing.T) {
			res, err := callFn(t, fx.root, "sw-list", "")
			if err != nil {
				t.Fatal(err)
			}
			r := res.(*SwListReply)
			rows := pkgdbtest.ReadTable(t, fx.csv, ',')
			if r.Manager != "rpm" || r.Count != fx.count || len(rows) != fx.count {
				t.Fatalf("got manager %q with %d packages (%d expected rows), want rpm with %d", r.Manager, r.Count, len(rows), fx.count)
			}
			// The reply is sorted by name and arch; the CSV is in database
			// order.
			want := map[string]bool{}
			for _, row := range rows {
				// name,epoch,version,release,arch,source_rpm,size,license,vendor,…
				v := row[2] + "-" + row[3]
				if row[1] != "" && row[1] != "0" {
					v = row[1] + ":" + v
				}
				src, srcVer := pkgdb.SplitSourceRpm(row[5])
				want[fmt.Sprintf("%s|%s|%s|%s|%s|%s", row[0], v, row[4], src, srcVer, row[8])] = true
			}
			for _, p := range r.Packages {
				key := fmt.Sprintf("%s|%s|%s|%s|%s|%s", p.Name, p.Version, p.Arch, p.Source, p.SourceVersion, p.Vendor)
				if !want[key] {
					t.Errorf("unexpected package %s", key)
				}
				delete(want, key)
				if p.Manager != "rpm" || p.InstallTime.IsZero() {
					t.Errorf("%s: manager %q, install time %v", p.Name, p.Manager, p.InstallTime)
				}
			}
			for k := range want {
				t.Errorf("missing package %s", k)
			}
		})
	}
}

func TestSwListRpmDetails(t *testing.T) {
	res, err := callFn(t, pkgdbData+"rpm-sqlite", "sw-list", `{"name":"curl"}`)
	if err != nil {
		t.Fatal(err)
	}
	var curl *pkgdb.Package
	for i, p := range res.(*SwListReply).Packages {
		if p.Name == "curl" {
			curl = &res.(*SwListReply).Packages[i]
		}
	}
	if curl == nil {
		t.Fatal("no curl in the sqlite fixture")
	}
	want := pkgdb.Package{Name: "curl", Version: "7.76.0-6.cm2", Arch: "x86_64", Source: "curl", SourceVersion: "7.76.0-6.cm2",
		Vendor: "Microsoft Corporation", InstallTime: time.Unix(1643279454, 0).UTC(), Manager: "rpm"}
	if *curl != want {
		t.Errorf("got %+v\nwant %+v", *curl, want)
	}
	res, err = callFn(t, pkgdbData+"rpm-bdb-epoch", "sw-list", "")
	if err != nil {
		t.Fatal(err)
	}
	if p := res.(*SwListReply).Packages[0]; p.Version != "1:0.0.1-rls" || p.Source != "hello" || p.SourceVersion != "0.0.1-rls" || p.Vendor != "" {
		t.Errorf("epoch package: got %+v, want hello 1:0.0.1-rls from hello 0.0.1-rls", p)
	}
	res, err = callFn(t, pkgdbData+"rpm-bdb", "sw-list", "")
	if err != nil {
		t.Fatal(err)
	}
	if p := res.(*SwListReply).Packages[0]; p.Source != "util-linux" || p.SourceVersion != "2.32.1-42.el8_8" {
		t.Errorf("libuuid: got source %q %q, want util-linux 2.32.1-42.el8_8", p.Source, p.SourceVersion)
	}
}
