//go:build unix

package keyfile

import (
	"io/fs"
	"os"
	"syscall"
)

// unixModes says the file's mode bits and owner mean what they say.
const unixModes = true

// openNoFollow opens path for reading, failing (ELOOP, or EMLINK on some
// BSDs) when its last component is a symbolic link, and without blocking
// on a FIFO planted there (checkFile refuses anything but a regular file).
func openNoFollow(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
}

// fileOwner returns the uid that owns fi.
func fileOwner(fi fs.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}
