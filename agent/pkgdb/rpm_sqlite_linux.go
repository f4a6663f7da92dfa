//go:build linux

package pkgdb

// The pure-Go sqlite driver (registered as "sqlite", the name go-rpmdb
// opens) is linked only where rpm databases exist.
import _ "modernc.org/sqlite"
