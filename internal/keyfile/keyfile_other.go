//go:build !unix

package keyfile

import (
	"errors"
	"io/fs"
	"os"
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

// fileOwner: no Unix owners here.
func fileOwner(fs.FileInfo) (int, bool) { return 0, false }
