//go:build windows

package pkgdb

import (
	"strconv"
	"strings"

	"golang.org/x/sys/windows/registry"
)

// platformLookedFor is added to the "no package database" message.
const platformLookedFor = `, HKLM\` + winUninstallKey + ` (both registry views)`

// registryViews are the 64-bit and 32-bit views of HKLM\SOFTWARE.
var registryViews = []struct {
	access uint32
	arch   string
}{{registry.WOW64_64KEY, "x64"}, {registry.WOW64_32KEY, "x86"}}

// readPlatformPackages lists the Uninstall registry keys of both views.
// root is not used: the registry has no filesystem root.
func readPlatformPackages(string) (string, []Package, bool, error) {
	var out []Package
	found := false
	for _, view := range registryViews {
		k, err := registry.OpenKey(registry.LOCAL_MACHINE, winUninstallKey, registry.READ|view.access)
		if err != nil {
			continue
		}
		found = true
		names, _ := k.ReadSubKeyNames(-1)
		for _, name := range names {
			if p, ok := readUninstallKey(k, name, view.access, view.arch); ok {
				out = append(out, p)
			}
		}
		k.Close()
	}
	return "windows", out, found, nil
}

func readUninstallKey(parent registry.Key, name string, access uint32, arch string) (Package, bool) {
	sk, err := registry.OpenKey(parent, name, registry.QUERY_VALUE|access)
	if err != nil {
		return Package{}, false
	}
	defer sk.Close()
	vals := map[string]any{}
	for _, v := range winUninstallValues.strings {
		if s, _, err := sk.GetStringValue(v); err == nil {
			vals[v] = s
		}
	}
	for _, v := range winUninstallValues.dwords {
		if n, _, err := sk.GetIntegerValue(v); err == nil {
			vals[v] = n
		}
	}
	return uninstallPackage(name, vals, arch)
}

// platformSignature stamps each Uninstall subkey's last write time, so an
// install, removal or in-place upgrade is seen.
func platformSignature(string) string {
	var b strings.Builder
	for _, view := range registryViews {
		k, err := registry.OpenKey(registry.LOCAL_MACHINE, winUninstallKey, registry.READ|view.access)
		if err != nil {
			b.WriteString("-;")
			continue
		}
		names, _ := k.ReadSubKeyNames(-1)
		for _, name := range names {
			b.WriteString(name)
			if sk, err := registry.OpenKey(k, name, registry.QUERY_VALUE|view.access); err == nil {
				if st, err := sk.Stat(); err == nil {
					b.WriteString("@" + strconv.FormatInt(st.ModTime().UnixNano(), 10))
				}
				sk.Close()
			}
			b.WriteByte(';')
		}
		k.Close()
	}
	return b.String()
}
