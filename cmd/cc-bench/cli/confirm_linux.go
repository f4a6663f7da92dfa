//go:build linux

package cli

import (
	"os"

	"golang.org/x/sys/unix"
)

// stdinIsTerminal reports whether standard input is a terminal: a
// character device that answers a terminal's ioctl (/dev/null is a
// character device too, and must not confirm a bulk change).
func stdinIsTerminal() bool {
	_, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS)
	return err == nil
}
