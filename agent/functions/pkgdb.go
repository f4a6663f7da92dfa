package functions

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// pkgDB reads the installed-package database under a root and keeps the
// parsed list until the files change: each call stats the files (cheap) and
// parses again only when a size or mtime differs.
type pkgDB struct {
	root string

	mu      sync.Mutex
	sig     string
	manager string
	pkgs    []Package
}

// load returns the package manager's name and its installed packages,
// sorted by name and arch. The slice is shared: callers must not modify it.
// With no supported database it returns a [fleet.CodeUnavailable] error.
func (d *pkgDB) load() (string, []Package, error) {
	sig := d.signature()
	d.mu.Lock()
	defer d.mu.Unlock()
	if sig == d.sig && d.manager != "" {
		return d.manager, d.pkgs, nil
	}
	manager, pkgs, err := d.read()
	if err != nil {
		return "", nil, err
	}
	sortPackages(pkgs)
	d.sig, d.manager, d.pkgs = sig, manager, pkgs
	return manager, pkgs, nil
}

// read parses whichever database exists: dpkg first, then rpm, then apk,
// then the platform's own (Windows' Uninstall registry keys; macOS
// application bundles and Homebrew).
func (d *pkgDB) read() (string, []Package, error) {
	pkgs, found, err := readDpkgDB(d.root)
	if err != nil {
		return "", nil, fleet.Errorf(fleet.CodeInternal, "%v", err)
	}
	if found {
		return "dpkg", pkgs, nil
	}
	pkgs, found, err = readRpmDB(d.root)
	if err != nil {
		return "", nil, fleet.Errorf(fleet.CodeInternal, "%v", err)
	}
	if found {
		return "rpm", pkgs, nil
	}
	data, err := os.ReadFile(filepath.Join(d.root, apkInstalledPath))
	switch {
	case err == nil:
		return "apk", parseApkInstalled(data), nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", nil, fleet.Errorf(fleet.CodeInternal, "read apk database: %v", err)
	}
	manager, pkgs, found, err := readPlatformPackages(d.root)
	if err != nil {
		return "", nil, fleet.Errorf(fleet.CodeInternal, "%v", err)
	}
	if found {
		return manager, pkgs, nil
	}
	return "", nil, fleet.Errorf(fleet.CodeUnavailable,
		"no supported package database under %s: looked for %s, %s/ (dpkg), %s (rpm), %s (apk)%s",
		d.root, dpkgStatusPath, dpkgStatusDPath, strings.Join(rpmDBPaths, ", "), apkInstalledPath, platformLookedFor)
}

// signature describes the database files' sizes and mtimes; it changes
// whenever one of them is written, added or removed.
func (d *pkgDB) signature() string {
	var b strings.Builder
	stampFile(&b, filepath.Join(d.root, dpkgStatusPath))
	b.WriteString(dirSignature(filepath.Join(d.root, dpkgStatusDPath)))
	for _, rel := range rpmDBPaths {
		stampFile(&b, filepath.Join(d.root, rel))
	}
	stampFile(&b, filepath.Join(d.root, rpmDBPaths[0])+"-wal")
	stampFile(&b, filepath.Join(d.root, rpmDBPaths[1])+"-wal")
	stampFile(&b, filepath.Join(d.root, apkInstalledPath))
	b.WriteString(platformSignature(d.root))
	return b.String()
}

// dirSignature describes a folder's entries by name, size and mtime, or is
// "-" when the folder cannot be read.
func dirSignature(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "-;"
	}
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.Name())
		if info, err := e.Info(); err == nil {
			stampInfo(&b, info)
		}
	}
	return b.String()
}

// stampFile writes a file's size and mtime to b, or "-" when it is absent.
func stampFile(b *strings.Builder, path string) {
	info, err := os.Stat(path)
	if err != nil {
		b.WriteString("-;")
		return
	}
	stampInfo(b, info)
}

func stampInfo(b *strings.Builder, info fs.FileInfo) {
	b.WriteByte('=')
	b.WriteString(strconv.FormatInt(info.Size(), 10))
	b.WriteByte('@')
	b.WriteString(strconv.FormatInt(info.ModTime().UnixNano(), 10))
	b.WriteByte(';')
}

// nameFilter matches package names against the optional `name` argument: a
// glob (path.Match) when it has *, ? or [, else a case-insensitive substring.
// An empty pattern matches everything.
type nameFilter struct {
	pattern string
	glob    bool
}

// newNameFilter validates pattern; a malformed glob is a
// [fleet.CodeBadRequest] error.
func newNameFilter(pattern string) (nameFilter, error) {
	f := nameFilter{pattern: pattern, glob: strings.ContainsAny(pattern, "*?[\\")}
	if f.glob {
		if _, err := path.Match(pattern, ""); err != nil {
			return f, fleet.Errorf(fleet.CodeBadRequest, "argument \"name\": bad glob %q: %v", pattern, err)
		}
	} else {
		f.pattern = strings.ToLower(pattern)
	}
	return f, nil
}

// match reports whether the package name matches.
func (f nameFilter) match(name string) bool {
	switch {
	case f.pattern == "":
		return true
	case f.glob:
		ok, _ := path.Match(f.pattern, name)
		return ok
	}
	return strings.Contains(strings.ToLower(name), f.pattern)
}

// errUnavailable formats a [fleet.CodeUnavailable] error.
func errUnavailable(format string, args ...any) error {
	return fleet.Errorf(fleet.CodeUnavailable, format, args...)
}
