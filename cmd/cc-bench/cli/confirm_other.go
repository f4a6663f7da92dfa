//go:build !linux

package cli

import "os"

// stdinIsTerminal reports whether standard input is a character device
// (elsewhere than Linux, without asking the terminal itself).
func stdinIsTerminal() bool { return isTerminal(os.Stdin) }
