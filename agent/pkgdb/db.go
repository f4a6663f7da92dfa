// Package pkgdb reads the installed-package databases and the package
// managers' own files: dpkg's status, rpm's databases (sqlite, ndb,
// Berkeley DB), apk's installed and APKINDEX files, apt's lists,
// changelogs and history log, Debian and Alpine version ordering, macOS
// plists and Homebrew, the Windows registry's Uninstall keys, and the text
// dnf, softwareupdate and PowerShell print. It plays the part procfs plays
// for node_exporter: parsers over bytes, readers and paths under a root
// directory, and no knowledge of the functions that use them
// (agent/functions turns what it parses into replies).
package pkgdb

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/commandcontrol/commandcontrol/agent/internal/filestamp"
)

// ErrNoDatabase is wrapped by [DB.Load]'s error when root holds none of the
// supported package databases.
var ErrNoDatabase = errors.New("no supported package database")

// DB reads the installed-package database under a root and keeps the
// parsed list until the files change: each call stats the files (cheap) and
// parses again only when a size or mtime differs.
type DB struct {
	root string

	mu      sync.Mutex
	sig     string
	manager string
	pkgs    []Package
}

// NewDB returns the database under root (paths are read relative to it).
func NewDB(root string) *DB { return &DB{root: root} }

// Load returns the package manager's name and its installed packages,
// sorted by name and arch. The slice is shared: callers must not modify it.
// With no supported database the error wraps [ErrNoDatabase].
func (d *DB) Load() (string, []Package, error) {
	sig := d.Signature()
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
func (d *DB) read() (string, []Package, error) {
	pkgs, found, err := readDpkgDB(d.root)
	if err != nil {
		return "", nil, err
	}
	if found {
		return "dpkg", pkgs, nil
	}
	pkgs, found, err = readRpmDB(d.root)
	if err != nil {
		return "", nil, err
	}
	if found {
		return "rpm", pkgs, nil
	}
	data, err := os.ReadFile(filepath.Join(d.root, ApkInstalledPath))
	switch {
	case err == nil:
		return "apk", parseApkInstalled(data), nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", nil, fmt.Errorf("read apk database: %w", err)
	}
	manager, pkgs, found, err := readPlatformPackages(d.root)
	if err != nil {
		return "", nil, err
	}
	if found {
		return manager, pkgs, nil
	}
	return "", nil, fmt.Errorf("%w under %s: looked for %s, %s/ (dpkg), %s (rpm), %s (apk)%s",
		ErrNoDatabase, d.root, DpkgStatusPath, DpkgStatusDPath, strings.Join(rpmDBPaths, ", "), ApkInstalledPath, platformLookedFor)
}

// Signature describes the database files' sizes and mtimes; it changes
// whenever one of them is written, added or removed.
func (d *DB) Signature() string {
	var b strings.Builder
	filestamp.File(&b, filepath.Join(d.root, DpkgStatusPath))
	b.WriteString(filestamp.Dir(filepath.Join(d.root, DpkgStatusDPath)))
	for _, rel := range rpmDBPaths {
		filestamp.File(&b, filepath.Join(d.root, rel))
	}
	filestamp.File(&b, filepath.Join(d.root, rpmDBPaths[0])+"-wal")
	filestamp.File(&b, filepath.Join(d.root, rpmDBPaths[1])+"-wal")
	filestamp.File(&b, filepath.Join(d.root, ApkInstalledPath))
	b.WriteString(platformSignature(d.root))
	return b.String()
}
