//go:build darwin

package pkgdb

// platformLookedFor is added to the "no package database" message.
const platformLookedFor = ", /Applications/*.app and Homebrew's Cellar and Caskroom (macOS)"

// readPlatformPackages lists macOS application bundles and Homebrew.
func readPlatformPackages(root string) (string, []Package, bool, error) {
	pkgs, found := readMacPackages(root)
	return "macos", pkgs, found, nil
}

func platformSignature(root string) string { return macSignature(root) }
