//go:build !linux && !windows

package proc

// killTree does nothing beyond the process group kill where /proc is not
// there to walk (macOS, the BSDs): a child that left the group survives.
func killTree(int, string) {}
