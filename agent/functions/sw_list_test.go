package functions

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions/functionstest"
	"github.com/commandcontrol/commandcontrol/agent/pkgdb"
	"github.com/commandcontrol/commandcontrol/agent/pkgdb/pkgdbtest"
)

func TestSwListFixture(t *testing.T) {
	res, err := callFn(t, debianRoot, "sw-list", "")
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*SwListReply)
	want := pkgdbtest.ReadTable(t, pkgdbData+"expected/packages.tsv", '\t')
	if r.Manager != "dpkg" || r.Count != len(want) || len(r.Packages) != 749 {
		t.Fatalf("got manager %q count %d (%d packages), want dpkg 749", r.Manager, r.Count, len(r.Packages))
	}
	for i, row := range want {
		p := r.Packages[i]
		got := fmt.Sprintf("%s %s %s %s %s", p.Name, p.Version, p.Arch, p.Source, p.SourceVersion)
		if w := fmt.Sprintf("%s %s %s %s %s", row[0], row[1], row[2], row[3], row[4]); got != w {
			t.Errorf("package %d: got %q, want %q", i, got, w)
		}
	}
}

func TestSwListFilter(t *testing.T) {
	tests := []struct{ name, want string }{
		{"openssl", "[libgnutls-openssl27 libxmlsec1-openssl openssl python3-openssl]"},
		{"libssl*", "[libssl-dev libssl3]"},
		{"LIBSSL3", "[libssl3]"},
		{"open?sh-client", "[openssh-client]"},
		{"open?ssh-client", "[]"},
		{"openssh-[cs]*", "[openssh-client]"},
		{"no-such-package", "[]"},
	}
	for _, tt := range tests {
		res, err := callFn(t, debianRoot, "sw-list", fmt.Sprintf(`{"name":%q}`, tt.name))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var names []string
		for _, p := range res.(*SwListReply).Packages {
			names = append(names, p.Name)
		}
		if got := fmt.Sprint(names); got != tt.want {
			t.Errorf("name %q: got %q, want %q", tt.name, got, tt.want)
		}
	}
	_, err := callFn(t, debianRoot, "sw-list", `{"name":"[a-"}`)
	functionstest.WantCode(t, err, 400, "glob")
}

func TestSwListOtherLayouts(t *testing.T) {
	res, err := callFn(t, distrolessRoot, "sw-list", "")
	if err != nil {
		t.Fatal(err)
	}
	if r := res.(*SwListReply); r.Manager != "dpkg" || r.Count != 3 {
		t.Errorf("distroless: got %q with %d packages, want dpkg with 3", r.Manager, r.Count)
	}
	res, err = callFn(t, alpineRoot, "sw-list", `{"name":"busybox*"}`)
	if err != nil {
		t.Fatal(err)
	}
	if r := res.(*SwListReply); r.Manager != "apk" || r.Count != 2 || r.Packages[0].Source != "busybox" {
		t.Errorf("alpine: got %+v, want apk with busybox and busybox-binsh", r)
	}
	_, err = callFn(t, t.TempDir(), "sw-list", "")
	functionstest.WantCode(t, err, 503, pkgdb.DpkgStatusPath, pkgdb.DpkgStatusDPath, pkgdb.ApkInstalledPath)
}

func TestSwListCacheAndInstallTime(t *testing.T) {
	root := t.TempDir()
	status := filepath.Join(root, pkgdb.DpkgStatusPath)
	write := func(text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(status), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(status, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n")
	info := filepath.Join(root, pkgdb.DpkgInfoPath, "a.list")
	pkgdbtest.CopyFile(t, status, info)
	stamp := time.Date(2025, 6, 24, 14, 36, 25, 0, time.UTC)
	if err := os.Chtimes(info, stamp, stamp); err != nil {
		t.Fatal(err)
	}
	fn, _ := newSwList(&Env{Root: root})
	call := func() *SwListReply {
		res, err := fn.Call(t.Context(), Args{})
		if err != nil {
			t.Fatal(err)
		}
		return res.(*SwListReply)
	}
	r := call()
	if r.Count != 1 || !r.Packages[0].InstallTime.Equal(stamp) {
		t.Fatalf("got %+v, want package a installed at %v", r.Packages, stamp)
	}
	if again := call(); &again.Packages[0] == &r.Packages[0] {
		t.Error("reply shares its slice with the cache")
	}
	write("Package: a\nStatus: install ok installed\nVersion: 2\nArchitecture: all\n\nPackage: b\nStatus: install ok installed\nVersion: 1\n")
	if r := call(); r.Count != 2 || r.Packages[0].Version != "2" {
		t.Errorf("after the status file changed: got %+v, want a=2 and b", r.Packages)
	}
}
