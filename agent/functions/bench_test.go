package functions

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/pkgdb"
	"github.com/commandcontrol/commandcontrol/agent/pkgdb/pkgdbtest"
)

// benchCall calls fn b.N times and fails the benchmark on an error.
func benchCall(b *testing.B, fn Function) {
	b.Helper()
	ctx := context.Background()
	for b.Loop() {
		if _, err := fn.Call(ctx, Args{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSwListCold(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		fn, _ := newSwList(&Env{Root: debianRoot})
		if _, err := fn.Call(ctx, Args{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSwListCached(b *testing.B) {
	fn, _ := newSwList(&Env{Root: debianRoot})
	benchCall(b, fn)
}

func BenchmarkSecPatchesCold(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		fn, _ := newSecPatches(&Env{Root: debianRoot, Now: fixtureNow})
		if _, err := fn.Call(ctx, Args{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSecPatchesCached(b *testing.B) {
	fn, _ := newSecPatches(&Env{Root: debianRoot, Now: fixtureNow})
	benchCall(b, fn)
}

func BenchmarkMachineInfoCold(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		fn, _ := newMachineInfo(&Env{Root: "/"})
		if _, err := fn.Call(ctx, Args{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMachineInfoCached(b *testing.B) {
	fn, _ := newMachineInfo(&Env{Root: "/"})
	benchCall(b, fn)
}

func BenchmarkCurrentLoad(b *testing.B) {
	fn, _ := newLoad(&Env{Root: "/"})
	benchCall(b, fn)
}

func BenchmarkCurrentCPUMemDiskIO(b *testing.B) {
	fn, _ := newCPUMemDiskIO(&Env{Root: "/"})
	f := fn.(*cpuMemDiskIO)
	f.sample(context.Background())
	f.cur.at = f.cur.at.Add(-time.Second)
	f.sample(context.Background())
	benchCall(b, fn)
}

func BenchmarkCPUMemDiskIOSample(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		if _, err := readIOSample(ctx, "/"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSwListRpmSqliteCold(b *testing.B) { benchSwListCold(b, pkgdbData+"rpm-sqlite") }
func BenchmarkSwListRpmNdbCold(b *testing.B)    { benchSwListCold(b, pkgdbData+"rpm-ndb") }
func BenchmarkSwListRpmBdbCold(b *testing.B)    { benchSwListCold(b, pkgdbData+"rpm-bdb") }

func BenchmarkSwListRpmSqliteCached(b *testing.B) {
	fn, _ := newSwList(&Env{Root: pkgdbData + "rpm-sqlite"})
	benchCall(b, fn)
}

func benchSwListCold(b *testing.B, root string) {
	ctx := context.Background()
	for b.Loop() {
		fn, _ := newSwList(&Env{Root: root})
		if _, err := fn.Call(ctx, Args{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSecPatchesAlpineCached(b *testing.B) {
	fn, _ := newSecPatches(&Env{Root: pkgdbData + "alpine-index", Now: fixtureNow})
	benchCall(b, fn)
}

// BenchmarkSecPatchesWithCVEs measures installed-sec-patches on the debian
// fixture with a history log and a changelog for every one of its 40
// installed security updates (the fixture has real changelogs for only a
// few): "cached" is every call after the first, "changelogs-cold" re-reads
// the history log and every changelog but not the security index.
func BenchmarkSecPatchesWithCVEs(b *testing.B) {
	root := cveBenchRoot(b)
	check := func(r any) {
		n := 0
		for _, p := range r.(*SecPatchesReply).Installed {
			if len(p.CVEs) > 0 {
				n++
			}
		}
		if n != 40 || r.(*SecPatchesReply).InstalledCount != 40 {
			b.Fatalf("%d of %d installed have CVE ids, want all 40", n, r.(*SecPatchesReply).InstalledCount)
		}
	}
	b.Run("cached", func(b *testing.B) {
		fn, _ := newSecPatches(&Env{Root: root, Now: fixtureNow})
		r, err := fn.Call(context.Background(), Args{})
		if err != nil {
			b.Fatal(err)
		}
		check(r)
		benchCall(b, fn)
	})
	b.Run("changelogs-cold", func(b *testing.B) {
		fn, _ := newSecPatches(&Env{Root: root, Now: fixtureNow})
		f := fn.(*secPatches)
		ctx := context.Background()
		for b.Loop() {
			f.history = pkgdb.HistoryCache{}
			f.changelogs = pkgdb.ChangelogCache{}
			r, err := fn.Call(ctx, Args{})
			if err != nil {
				b.Fatal(err)
			}
			check(r)
		}
	})
}

// cveBenchRoot copies the debian fixture's dpkg status, apt lists and
// history log and writes a changelog (its version's entry naming two CVE
// ids, then 200 older entries) for every installed security update.
func cveBenchRoot(b testing.TB) string {
	b.Helper()
	root := b.TempDir()
	pkgdbtest.CopyFile(b, debianRoot+"/"+pkgdb.DpkgStatusPath, filepath.Join(root, pkgdb.DpkgStatusPath))
	pkgdbtest.CopyFile(b, debianRoot+"/"+pkgdb.AptLogPath+"/history.log", filepath.Join(root, pkgdb.AptLogPath, "history.log"))
	for _, name := range []string{
		"deb.debian.org_debian-security_dists_bookworm-security_InRelease",
		"deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages.lz4",
	} {
		pkgdbtest.CopyFile(b, debianRoot+"/"+pkgdb.AptListsPath+"/"+name, filepath.Join(root, pkgdb.AptListsPath, name))
	}
	fn, _ := newSecPatches(&Env{Root: root, Now: fixtureNow})
	res, err := fn.Call(context.Background(), Args{})
	if err != nil {
		b.Fatal(err)
	}
	_, pkgs, _ := fn.(*secPatches).db.Load()
	versions := map[string]string{}
	for _, p := range pkgs {
		versions[p.Name+"/"+p.Arch] = p.SourceVersion
	}
	installed := res.(*SecPatchesReply).Installed
	for _, p := range installed {
		var text strings.Builder
		fmt.Fprintf(&text, "%s (%s) bookworm-security; urgency=high\n\n  * CVE-2025-%04d, CVE-2025-%04d\n\n -- M <m@example.org>  Mon, 01 Jan 2024 00:00:00 +0000\n\n",
			p.Source, versions[p.Name+"/"+p.Arch], len(p.Name)*7, len(p.Name)*11)
		text.WriteString(strings.Repeat("older (0.1-1) unstable; urgency=low\n\n  * CVE-2020-1234 and some more words\n\n -- M <m@example.org>  Mon, 01 Jan 2020 00:00:00 +0000\n\n", 200))
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write([]byte(text.String()))
		zw.Close()
		path := filepath.Join(root, pkgdb.DocPath, p.Name, "changelog.Debian.gz")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(path, gz.Bytes(), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return root
}
