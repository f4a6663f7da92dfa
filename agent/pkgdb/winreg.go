package pkgdb

import (
	"strings"
	"time"
)

// Windows keeps one subkey per installed program under this key, in a
// 64-bit and a 32-bit (WOW6432Node) registry view; both are read.
const winUninstallKey = `SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall`

// uninstallPackage builds a Package from the values of one Uninstall
// subkey (strings for REG_SZ/REG_EXPAND_SZ, uint64 for REG_DWORD), as
// Programs and Features shows them: entries without a DisplayName, system
// components, and updates of another product (ParentKeyName, ReleaseType
// "Update"/"Hotfix"/"Security Update") are left out. arch is the registry
// view ("x64" or "x86"). The reading itself is windows-only (sw_windows.go)
// and compile-checked here; no Windows machine exists where this is
// developed.
func uninstallPackage(key string, vals map[string]any, arch string) (Package, bool) {
	str := func(name string) string { s, _ := vals[name].(string); return strings.TrimSpace(s) }
	dword := func(name string) uint64 { n, _ := vals[name].(uint64); return n }
	name := str("DisplayName")
	if name == "" || dword("SystemComponent") == 1 || str("ParentKeyName") != "" {
		return Package{}, false
	}
	switch strings.ToLower(str("ReleaseType")) {
	case "update", "hotfix", "security update", "service pack":
		return Package{}, false
	}
	p := Package{Name: name, Version: str("DisplayVersion"), Arch: arch, Source: key, Vendor: str("Publisher"), Manager: "windows-uninstall"}
	if dword("WindowsInstaller") == 1 {
		p.Manager = "msi"
	}
	if t, err := time.Parse("20060102", str("InstallDate")); err == nil {
		p.InstallTime = t.UTC()
	}
	return p, true
}

// winUninstallValues are the values uninstallPackage reads.
var winUninstallValues = struct{ strings, dwords []string }{
	strings: []string{"DisplayName", "DisplayVersion", "Publisher", "InstallDate", "ParentKeyName", "ReleaseType"},
	dwords:  []string{"SystemComponent", "WindowsInstaller"},
}
