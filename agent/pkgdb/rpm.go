package pkgdb

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	rpmdb "github.com/knqyf263/go-rpmdb/pkg"
)

// rpmDBPaths are where rpm keeps its database, relative to the root, in
// the order they are tried: the sqlite backend (rpm ≥ 4.16: Fedora ≥ 33,
// RHEL 9; Fedora ≥ 36 moved it to /usr/lib/sysimage/rpm), SUSE's ndb, then
// the classic Berkeley DB hash file (RHEL ≤ 8, CentOS, Amazon Linux 2).
var rpmDBPaths = []string{
	"usr/lib/sysimage/rpm/rpmdb.sqlite",
	"var/lib/rpm/rpmdb.sqlite",
	"usr/lib/sysimage/rpm/Packages.db",
	"var/lib/rpm/Packages.db",
	"var/lib/rpm/Packages",
}

// findRpmDB returns the first rpm database file under root, or "".
func findRpmDB(root string) string {
	for _, rel := range rpmDBPaths {
		p := filepath.Join(root, rel)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// readRpmDB reads the rpm database under root with go-rpmdb, which knows
// all three formats (sqlite, ndb, Berkeley DB). found is false when there
// is none.
func readRpmDB(root string) (pkgs []Package, found bool, err error) {
	path := findRpmDB(root)
	if path == "" {
		return nil, false, nil
	}
	pkgs, err = readRpmFile(path)
	if err != nil {
		return nil, true, fmt.Errorf("read rpm database %s: %w", path, err)
	}
	return pkgs, true, nil
}

// readRpmFile lists the packages of one rpm database file. A sqlite
// database is read from a private copy: go-rpmdb opens it read-write, which
// would create -wal and -shm files next to the host's database (or fail on a
// read-only mount). The copy includes the -wal file, so committed but not
// yet checkpointed transactions are seen.
func readRpmFile(path string) ([]Package, error) {
	if strings.HasSuffix(path, ".sqlite") {
		dir, err := os.MkdirTemp("", "cc-agent-rpmdb-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		cp := filepath.Join(dir, "rpmdb.sqlite")
		if err := copyFileTo(path, cp); err != nil {
			return nil, err
		}
		if err := copyFileTo(path+"-wal", cp+"-wal"); err != nil && !os.IsNotExist(err) {
			return nil, err
		}
		path = cp
	}
	db, err := rpmdb.Open(path)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	infos, err := db.ListPackages()
	if err != nil {
		return nil, err
	}
	out := make([]Package, 0, len(infos))
	for _, info := range infos {
		out = append(out, rpmPackage(info))
	}
	// go-rpmdb decodes every package's file list too (tens of MB on a full
	// Fedora); hand that memory back to the OS now rather than keep the
	// agent's RSS high until the scavenger gets to it.
	defer debug.FreeOSMemory()
	return out, nil
}

// rpmPackage normalises one rpm header. Version is [epoch:]version-release
// as dnf prints it (epoch 0 is left out); the source is the source rpm's
// name and version-release.
func rpmPackage(p *rpmdb.PackageInfo) Package {
	v := p.Version
	if p.Release != "" {
		v += "-" + p.Release
	}
	if p.Epoch != nil && *p.Epoch != 0 {
		v = fmt.Sprintf("%d:%s", *p.Epoch, v)
	}
	pkg := Package{Name: p.Name, Version: v, Arch: p.Arch, Vendor: p.Vendor, Manager: "rpm"}
	pkg.Source, pkg.SourceVersion = SplitSourceRpm(p.SourceRpm)
	if pkg.Source == "" {
		pkg.Source, pkg.SourceVersion = p.Name, p.Version+"-"+p.Release
	}
	if p.InstallTime > 0 {
		pkg.InstallTime = time.Unix(int64(p.InstallTime), 0).UTC()
	}
	return pkg
}

// SplitSourceRpm splits "util-linux-2.32.1-42.el8_8.src.rpm" into
// "util-linux" and "2.32.1-42.el8_8". Names may contain dashes; version and
// release may not, so the last two dashes separate them.
func SplitSourceRpm(s string) (name, version string) {
	s = strings.TrimSuffix(s, ".rpm")
	s = strings.TrimSuffix(strings.TrimSuffix(s, ".src"), ".nosrc")
	r := strings.LastIndexByte(s, '-')
	if r <= 0 {
		return "", ""
	}
	v := strings.LastIndexByte(s[:r], '-')
	if v <= 0 {
		return "", ""
	}
	return s[:v], s[v+1:]
}

// copyFileTo copies src to a new file dst.
func copyFileTo(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
