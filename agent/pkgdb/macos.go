package pkgdb

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/internal/filestamp"
)

// macOS software sources, relative to the root. These readers are plain
// file reads, so they are tested on fixture trees here; only the darwin
// build reads them in [DB.Load] (platform_darwin.go). No macOS machine exists where this is
// developed: the fixtures were written by hand to the documented formats.
var (
	macAppDirs      = []string{"Applications", "Applications/Utilities", "System/Applications", "System/Applications/Utilities"}
	homebrewPrefixs = []string{"opt/homebrew", "usr/local"} // Apple silicon, Intel
)

// readMacPackages lists application bundles and Homebrew formulae and
// casks under root. found is false when none of the places exist.
func readMacPackages(root string) (pkgs []Package, found bool) {
	for _, dir := range macAppDirs {
		entries, err := os.ReadDir(filepath.Join(root, dir))
		if err != nil {
			continue
		}
		found = true
		for _, e := range entries {
			if !e.IsDir() || !strings.HasSuffix(e.Name(), ".app") {
				continue
			}
			app := filepath.Join(root, dir, e.Name())
			data, err := os.ReadFile(filepath.Join(app, "Contents", "Info.plist"))
			if err != nil {
				continue
			}
			if p, ok := appPackage(e.Name(), data); ok {
				if st, err := os.Stat(app); err == nil {
					p.InstallTime = st.ModTime().UTC().Truncate(time.Second)
				}
				pkgs = append(pkgs, p)
			}
		}
	}
	for _, prefix := range homebrewPrefixs {
		cellar := filepath.Join(root, prefix, "Cellar")
		if formulae, ok := readCellar(cellar); ok {
			found = true
			pkgs = append(pkgs, formulae...)
		}
		if casks, ok := readCaskroom(filepath.Join(root, prefix, "Caskroom")); ok {
			found = true
			pkgs = append(pkgs, casks...)
		}
	}
	return pkgs, found
}

// appPackage reads an application bundle's Info.plist: the name is
// CFBundleDisplayName or CFBundleName (else the bundle's file name), the
// version CFBundleShortVersionString (else CFBundleVersion), the source
// the bundle identifier. A bundle records no vendor or architecture.
func appPackage(bundle string, infoPlist []byte) (Package, bool) {
	v, err := parsePlist(infoPlist)
	if err != nil {
		return Package{}, false
	}
	d, ok := v.(map[string]any)
	if !ok {
		return Package{}, false
	}
	str := func(keys ...string) string {
		for _, k := range keys {
			if s, ok := d[k].(string); ok && s != "" {
				return s
			}
		}
		return ""
	}
	p := Package{
		Name:    str("CFBundleDisplayName", "CFBundleName"),
		Version: str("CFBundleShortVersionString", "CFBundleVersion"),
		Source:  str("CFBundleIdentifier"),
		Manager: "app",
	}
	if p.Name == "" {
		p.Name = strings.TrimSuffix(bundle, ".app")
	}
	p.SourceVersion = str("CFBundleVersion")
	return p, true
}

// brewReceipt is the part of a Homebrew INSTALL_RECEIPT.json that is read.
type brewReceipt struct {
	Time   int64  `json:"time"`
	Arch   string `json:"arch"`
	Source struct {
		Tap string `json:"tap"`
	} `json:"source"`
}

// parseBrewReceipt decodes INSTALL_RECEIPT.json of one formula version.
func parseBrewReceipt(data []byte) (brewReceipt, error) {
	var r brewReceipt
	err := json.Unmarshal(data, &r)
	return r, err
}

// readCellar lists Cellar/<formula>/<version>/: one package per installed
// version, with the tap, arch and install time of its receipt.
func readCellar(cellar string) ([]Package, bool) {
	formulae, err := os.ReadDir(cellar)
	if err != nil {
		return nil, false
	}
	var out []Package
	for _, f := range formulae {
		versions, err := os.ReadDir(filepath.Join(cellar, f.Name()))
		if err != nil {
			continue
		}
		for _, v := range versions {
			if !v.IsDir() || strings.HasPrefix(v.Name(), ".") {
				continue
			}
			p := Package{Name: f.Name(), Version: v.Name(), Source: f.Name(), SourceVersion: v.Name(), Manager: "homebrew"}
			data, err := os.ReadFile(filepath.Join(cellar, f.Name(), v.Name(), "INSTALL_RECEIPT.json"))
			if err == nil {
				if r, err := parseBrewReceipt(data); err == nil {
					p.Arch, p.Vendor = r.Arch, r.Source.Tap
					if r.Time > 0 {
						p.InstallTime = time.Unix(r.Time, 0).UTC()
					}
				}
			}
			out = append(out, p)
		}
	}
	return out, true
}

// readCaskroom lists Caskroom/<cask>/<version>/ (.metadata is Homebrew's
// own); the install time is the version folder's mtime.
func readCaskroom(dir string) ([]Package, bool) {
	casks, err := os.ReadDir(dir)
	if err != nil {
		return nil, false
	}
	var out []Package
	for _, c := range casks {
		versions, err := os.ReadDir(filepath.Join(dir, c.Name()))
		if err != nil {
			continue
		}
		for _, v := range versions {
			if !v.IsDir() || strings.HasPrefix(v.Name(), ".") {
				continue
			}
			p := Package{Name: c.Name(), Version: v.Name(), Source: c.Name(), SourceVersion: v.Name(), Manager: "homebrew-cask"}
			if info, err := v.Info(); err == nil {
				p.InstallTime = info.ModTime().UTC().Truncate(time.Second)
			}
			out = append(out, p)
		}
	}
	return out, true
}

// macSignature stamps the folders whose entries change when software is
// installed or removed.
func macSignature(root string) string {
	var b strings.Builder
	for _, dir := range macAppDirs {
		b.WriteString(filestamp.Dir(filepath.Join(root, dir)))
	}
	for _, prefix := range homebrewPrefixs {
		for _, sub := range []string{"Cellar", "Caskroom"} {
			b.WriteString(filestamp.Dir(filepath.Join(root, prefix, sub)))
		}
	}
	return b.String()
}

// MacInstallHistoryPath is macOS's log of installed packages and updates.
const MacInstallHistoryPath = "Library/Receipts/InstallHistory.plist"

// MacInstall is one entry of InstallHistory.plist.
type MacInstall struct {
	Name        string    `json:"name"`
	Version     string    `json:"version"`
	Date        time.Time `json:"date"`
	ProcessName string    `json:"process_name"`
	// Security is true for Apple's security content (XProtect, MRT,
	// Gatekeeper data, "Security Update", Rapid Security Responses).
	Security bool `json:"security"`
}

// parseInstallHistory decodes InstallHistory.plist: an array of dicts with
// displayName, displayVersion, date and processName.
func parseInstallHistory(data []byte) ([]MacInstall, error) {
	v, err := parsePlist(data)
	if err != nil {
		return nil, err
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, errors.New("InstallHistory.plist is not an array")
	}
	out := []MacInstall{}
	for _, item := range arr {
		d, ok := item.(map[string]any)
		if !ok {
			continue
		}
		in := MacInstall{}
		in.Name, _ = d["displayName"].(string)
		in.Version, _ = d["displayVersion"].(string)
		in.Date, _ = d["date"].(time.Time)
		in.ProcessName, _ = d["processName"].(string)
		in.Security = macSecurityContent(in.Name)
		out = append(out, in)
	}
	return out, nil
}

// macSecurityContent recognises Apple's security payloads by name.
func macSecurityContent(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"security", "xprotect", "mrt", "gatekeeper", "background security", "rapid security"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// ReadInstallHistory reads root's InstallHistory.plist. When it does not
// exist the error wraps [fs.ErrNotExist].
func ReadInstallHistory(root string) ([]MacInstall, error) {
	data, err := os.ReadFile(filepath.Join(root, MacInstallHistoryPath))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", MacInstallHistoryPath, err)
	}
	return parseInstallHistory(data)
}
