package pkgdb

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Paths of the dpkg database, relative to the root.
const (
	DpkgStatusPath  = "var/lib/dpkg/status"
	DpkgStatusDPath = "var/lib/dpkg/status.d"
	DpkgInfoPath    = "var/lib/dpkg/info"
)

// Package is one installed package, normalised across package managers.
type Package struct {
	Name          string `json:"name"`
	Version       string `json:"version"`
	Arch          string `json:"arch"`
	Source        string `json:"source"`
	SourceVersion string `json:"source_version"`
	// Vendor is the maintainer (dpkg, apk).
	Vendor string `json:"vendor,omitempty"`
	// InstallTime is when the package was installed or last upgraded, where
	// the manager records it.
	InstallTime time.Time `json:"install_time,omitzero"`
	Manager     string    `json:"manager"`
}

// parseDpkgStatus returns the installed packages of a dpkg status file: only
// stanzas whose Status is "install ok installed" (or "hold ok installed").
// Half-installed, config-files and not-installed stanzas are left out. The
// result is in file order.
func parseDpkgStatus(data []byte) []Package {
	var out []Package
	scanStanzas(data, func(s stanza) bool {
		if !dpkgInstalled(s.get("Status")) {
			return true
		}
		if p, ok := dpkgPackage(s); ok {
			out = append(out, p)
		}
		return true
	})
	return out
}

// dpkgInstalled reads the three words of a Status field
// (want flag, error flag, state) and reports a fully installed package.
func dpkgInstalled(status string) bool {
	w := strings.Fields(status)
	return len(w) == 3 && (w[0] == "install" || w[0] == "hold") && w[1] == "ok" && w[2] == "installed"
}

// parseDpkgStatusFile reads one distroless status.d file: a single stanza
// without a Status field. ok is false when the file is not a package stanza
// (an md5sums list, an empty file).
func parseDpkgStatusFile(data []byte) (p Package, ok bool) {
	scanStanzas(data, func(s stanza) bool {
		if st := s.get("Status"); st != "" && !dpkgInstalled(st) {
			return false
		}
		p, ok = dpkgPackage(s)
		return false
	})
	return p, ok
}

// dpkgPackage builds a Package from a stanza that names a package and a
// version. Source is "name (version)" or just "name"; absent, the source is
// the package itself.
func dpkgPackage(s stanza) (Package, bool) {
	p := Package{
		Name:    s.get("Package"),
		Version: s.get("Version"),
		Arch:    s.get("Architecture"),
		Vendor:  s.get("Maintainer"),
		Manager: "dpkg",
	}
	if p.Name == "" || p.Version == "" || strings.ContainsAny(p.Name, " \t") {
		return Package{}, false
	}
	p.Source, p.SourceVersion = p.Name, p.Version
	if src := s.get("Source"); src != "" {
		name, ver, hasVer := strings.Cut(src, " ")
		p.Source = name
		if hasVer {
			p.SourceVersion = strings.Trim(strings.TrimSpace(ver), "()")
		}
	}
	return p, true
}

// readDpkgDB reads the dpkg database under root: the status file and the
// distroless status.d folder, whichever exist. found is false when neither
// does. Install times come from the mtime of each package's info/*.list file.
func readDpkgDB(root string) (pkgs []Package, found bool, err error) {
	data, err := os.ReadFile(filepath.Join(root, DpkgStatusPath))
	switch {
	case err == nil:
		found = true
		pkgs = parseDpkgStatus(data)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("read dpkg status: %w", err)
	}
	dir := filepath.Join(root, DpkgStatusDPath)
	entries, err := os.ReadDir(dir)
	switch {
	case err == nil:
		found = true
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		if !isStanzaFile(e) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if p, ok := parseDpkgStatusFile(data); ok {
			pkgs = append(pkgs, p)
		}
	}
	addInstallTimes(root, pkgs)
	return pkgs, found, nil
}

// maintainerFileExts are the control files that may sit beside the stanzas
// in status.d; package names may contain dots, so only these are skipped
// by name, and anything else that is not a stanza is skipped on parsing.
var maintainerFileExts = map[string]bool{
	".md5sums": true, ".preinst": true, ".postinst": true, ".prerm": true,
	".postrm": true, ".conffiles": true, ".list": true, ".shlibs": true,
	".symbols": true, ".triggers": true, ".templates": true, ".config": true,
}

// isStanzaFile reports whether a status.d entry may hold a package stanza.
func isStanzaFile(e fs.DirEntry) bool {
	if !e.Type().IsRegular() || maintainerFileExts[filepath.Ext(e.Name())] {
		return false
	}
	info, err := e.Info()
	return err == nil && info.Size() < 1<<20
}

// addInstallTimes sets InstallTime from var/lib/dpkg/info/<name>[:<arch>].list,
// which dpkg rewrites when it unpacks a package.
func addInstallTimes(root string, pkgs []Package) {
	info := filepath.Join(root, DpkgInfoPath)
	if _, err := os.Stat(info); err != nil {
		return
	}
	for i := range pkgs {
		p := &pkgs[i]
		for _, name := range []string{p.Name + ":" + p.Arch + ".list", p.Name + ".list"} {
			if st, err := os.Stat(filepath.Join(info, name)); err == nil {
				p.InstallTime = st.ModTime().UTC().Truncate(time.Second)
				break
			}
		}
	}
}

// sortPackages orders packages by name, then architecture.
func sortPackages(pkgs []Package) {
	sort.SliceStable(pkgs, func(i, j int) bool {
		if pkgs[i].Name != pkgs[j].Name {
			return pkgs[i].Name < pkgs[j].Name
		}
		return pkgs[i].Arch < pkgs[j].Arch
	})
}
