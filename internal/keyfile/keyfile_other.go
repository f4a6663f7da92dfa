//go:build !unix

package keyfile

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// unixModes says the file's mode bits and owner mean what they say: not
// here (Windows reports 0666 for every writable file; its ACL is left to
// the administrator).
const unixModes = false

// openNoFollow opens path for reading. Windows has no O_NOFOLLOW; open
// reports a symbolic link (Lstat) before calling it.
func openNoFollow(path string) (*os.File, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return nil, errSymlink
	}
	return os.Open(path)
}

var errSymlink = errors.New("symbolic link")

// openExcl creates path, mode 0600, failing when anything is there.
func openExcl(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

// fileOwner: no Unix owners here.
func fileOwner(fs.FileInfo) (int, bool) { return 0, false }

// linkUnsupported says os.Link failed because the filesystem cannot make
// a hard link there (FAT, some network shares): then Create writes the
// file itself.
func linkUnsupported(err error) bool {
	const (
		errorInvalidFunction = syscall.Errno(1)  // ERROR_INVALID_FUNCTION
		errorNotSameDevice   = syscall.Errno(17) // ERROR_NOT_SAME_DEVICE
		errorNotSupported    = syscall.Errno(50) // ERROR_NOT_SUPPORTED
	)
	for _, e := range []error{errorInvalidFunction, errorNotSameDevice, errorNotSupported} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
