//go:build !windows && !darwin

package pkgdb

// platformLookedFor is added to the "no package database" message; Linux
// and the BSDs have no platform-specific source beyond the package managers.
const platformLookedFor = ""

// readPlatformPackages finds nothing off Windows and macOS.
func readPlatformPackages(string) (string, []Package, bool, error) { return "", nil, false, nil }

// platformSignature is empty: there is nothing platform-specific to stamp.
func platformSignature(string) string { return "" }
