//go:build unix

package keyfile

import (
	"errors"
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

// openExcl creates path, mode 0600, failing when anything is there, a
// symbolic link included.
func openExcl(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
}

// fileOwner returns the uid that owns fi.
func fileOwner(fi fs.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

// linkUnsupported says os.Link failed because the filesystem cannot make
// a hard link there (vfat, some FUSE or SMB mounts), not because of the
// file: then Create writes the file itself.
func linkUnsupported(err error) bool {
	for _, e := range []error{syscall.EPERM, syscall.ENOTSUP, syscall.EOPNOTSUPP, syscall.EXDEV, syscall.EMLINK} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
