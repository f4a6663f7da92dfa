// Package keyfile reads and writes the files that hold secrets: nkey
// seeds, the cluster and site secrets, TLS private keys. Each is written
// with mode 0600 and, on reading, refused (like ssh's StrictModes) when
// another user could read it or could have put it there:
//
//   - group or others can read it (ModeError: the file, its mode and the
//     chmod to run);
//   - it is a symbolic link, or not a regular file;
//   - it belongs to a user other than the one reading it (or root);
//   - its directory is writable by group or others without the sticky bit.
//
// The file is opened once, without following a final symbolic link, and
// checked (fstat) and read through that one handle: nothing can swap it
// between the check and the read.
//
// Windows has no such mode bits (Go reports 0666 for every writable
// file) nor Unix owners, so there the file's ACL is left to the
// administrator and only the file's kind is checked.
package keyfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nkeys"
)

// ErrReadable is what every ModeError is (test with errors.Is).
var ErrReadable = errors.New("key file readable by others")

// ErrUnsafe is what every refusal of a key file is (test with
// errors.Is): a ModeError or an UnsafeError.
var ErrUnsafe = errors.New("key file unsafe")

// ModeError refuses a file that group or others can read.
type ModeError struct {
	// What names the file's kind ("key file", "cluster secret", …).
	What string
	Path string
	Mode fs.FileMode
}

func (e *ModeError) Error() string {
	return fmt.Sprintf("%s %s has mode %#o (%v): a key must be readable by its owner only; run: chmod 600 %s",
		e.What, e.Path, e.Mode, e.Mode, e.Path)
}

// Is makes errors.Is(err, ErrReadable) and errors.Is(err, ErrUnsafe) true.
func (e *ModeError) Is(target error) bool { return target == ErrReadable || target == ErrUnsafe }

// UnsafeError refuses a key file another user could have planted or
// swapped: a symbolic link, a file owned by someone else, a file in a
// directory others can write. Its message names the file, what is wrong,
// and what to do.
type UnsafeError struct {
	What string
	Path string
	// Problem says what is wrong ("is a symbolic link…"), Fix what to do.
	Problem, Fix string
}

func (e *UnsafeError) Error() string {
	return fmt.Sprintf("%s %s %s; %s", e.What, e.Path, e.Problem, e.Fix)
}

// Is makes errors.Is(err, ErrUnsafe) true.
func (e *UnsafeError) Is(target error) bool { return target == ErrUnsafe }

// Check refuses the file at path, described as what, when it is unsafe
// (see the package comment). Its error for a file that does not exist
// wraps fs.ErrNotExist.
func Check(what, path string) error {
	f, err := open(what, path, MaxSize)
	if err != nil {
		return err
	}
	return f.Close()
}

// Read returns the contents of the file at path after Check, read through
// the handle that was checked.
func Read(what, path string) ([]byte, error) { return ReadMax(what, path, MaxSize) }

// ReadMax is Read for a file of at most max bytes, for files that hold
// many keys (a simulated fleet's seeds).
func ReadMax(what, path string, max int) ([]byte, error) {
	f, err := open(what, path, max)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(max)+1))
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", what, path, err)
	}
	if len(b) > max {
		return nil, sizeError(what, path, max)
	}
	return b, nil
}

// open checks the directory of path, opens path without following a final
// symbolic link and checks the open file (checkFile); the caller reads
// from and closes the file returned.
func open(what, path string, max int) (*os.File, error) {
	if err := checkDir(what, path); err != nil {
		return nil, err
	}
	f, err := openNoFollow(path)
	if err != nil {
		if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
			return nil, symlinkError(what, path)
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		err = checkFile(what, path, fi, max)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// MaxSize bounds a key or secret file: a PEM private key or an nkey seed
// is a few KiB at most, and a planted huge (or sparse) file must not fill
// the reader's memory.
const MaxSize = 64 << 10

func sizeError(what, path string, max int) error {
	problem := fmt.Sprintf("is larger than %d KiB, which no key is", max>>10)
	if max != MaxSize {
		problem = fmt.Sprintf("is larger than the %d KiB it can be", max>>10)
	}
	return &UnsafeError{What: what, Path: path,
		Problem: problem,
		Fix:     "pass the path of the key file itself"}
}

func symlinkError(what, path string) error {
	target, _ := os.Readlink(path)
	return &UnsafeError{What: what, Path: path,
		Problem: fmt.Sprintf("is a symbolic link (to %s): a key is read only from a regular file, since whoever can change the link chooses the key", target),
		Fix:     "pass the real file's path, or replace the link with the file itself"}
}

// checkFile refuses the open file fi at path unless it is a regular
// file, and, where there are Unix modes and owners, one that only its
// owner can read and that belongs to this process's user or to root.
func checkFile(what, path string, fi fs.FileInfo, max int) error {
	if !fi.Mode().IsRegular() {
		return &UnsafeError{What: what, Path: path,
			Problem: fmt.Sprintf("is not a regular file (%v)", fi.Mode().Type()),
			Fix:     "a key must be a regular file: pass the path of one"}
	}
	if fi.Size() > int64(max) {
		return sizeError(what, path, max)
	}
	if !unixModes {
		return nil
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return &ModeError{What: what, Path: path, Mode: perm}
	}
	if uid, ok := fileOwner(fi); ok {
		if me := os.Geteuid(); uid != me && uid != 0 && !(me == 0 && privateDirOf(path, uid, fi)) {
			return &UnsafeError{What: what, Path: path,
				Problem: fmt.Sprintf("is owned by uid %d, not by uid %d who runs this: a key must belong to the user that uses it or root (root may also use one in a service's private state directory: mode 0700, below directories only root can write)", uid, me),
				Fix:     fmt.Sprintf("if it is yours, run: chown %d %s; to use another user's (a service's) key, use a copy you own: install -m 600 -o %d %s COPY", me, path, me, path)}
		}
	}
	return nil
}

// privateDirOf reports whether the file opened (fi) at path lies in a
// service's own state directory: one that belongs to uid, that no one
// else may enter (mode 0700 or less), whose parent belongs to root and is
// closed to everyone else, and whose every ancestor belongs to root and
// is writable by no one else (as systemd's StateDirectory of a
// DynamicUser, /var/lib/private/<name>). Only uid and root can have put a
// file there, or moved the directory, so root may read uid's key in it
// (`sudo cc-bench --key /var/lib/cc-control/admin.nk`). Anywhere else —
// a user's own private directory, or one below a directory a user owns —
// that user could have planted a key for root to use.
func privateDirOf(path string, uid int, fi fs.FileInfo) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return false
	}
	dfi, err := os.Lstat(dir)
	if err != nil {
		return false
	}
	if owner, ok := fileOwner(dfi); !ok || owner != uid || !dfi.IsDir() || dfi.Mode().Perm()&0o077 != 0 {
		return false
	}
	// The file opened is the one in that directory, whatever the path
	// named on the way.
	if here, err := os.Lstat(filepath.Join(dir, filepath.Base(abs))); err != nil || !os.SameFile(here, fi) {
		return false
	}
	// Its parent is root's and closed to everyone else, as systemd's
	// /var/lib/private is: a user's own 0700 home or /run/user/<uid>
	// sits in a directory others may enter, and is refused.
	if pfi, err := os.Lstat(filepath.Dir(dir)); err != nil || pfi.Mode().Perm()&0o077 != 0 {
		return false
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		afi, err := os.Lstat(d)
		if err != nil {
			return false
		}
		if owner, ok := fileOwner(afi); !ok || owner != 0 || !afi.IsDir() || afi.Mode().Perm()&0o022 != 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

// checkDir refuses path when its directory is writable by group or others
// without the sticky bit: another user could then replace the key. A
// directory that cannot be stat'ed is left to open to report.
func checkDir(what, path string) error {
	if !unixModes {
		return nil
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return nil
	}
	if m := fi.Mode(); m.Perm()&0o022 != 0 && m&fs.ModeSticky == 0 {
		return &UnsafeError{What: what, Path: path,
			Problem: fmt.Sprintf("is in directory %s of mode %#o (%v), which others can write: they could replace the key", dir, m.Perm(), m.Perm()),
			Fix:     "run: chmod go-w " + dir}
	}
	return nil
}

// ReadSeed reads an nkey seed (surrounding white space ignored) from the
// file at path after Check.
func ReadSeed(what, path string) (nkeys.KeyPair, error) {
	b, err := Read(what, path)
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
	if err != nil {
		return nil, fmt.Errorf("%s %s does not hold an nkey seed: %w", what, path, err)
	}
	return kp, nil
}

// LoadOrCreateSeed reads the seed file at path (ReadSeed), or, when there
// is none, creates its directory (0700) and the file with a new key from
// create (Create); created says which.
func LoadOrCreateSeed(what, path string, create func() (nkeys.KeyPair, error)) (kp nkeys.KeyPair, created bool, err error) {
	kp, err = ReadSeed(what, path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return kp, false, err
	}
	if kp, err = create(); err != nil {
		return nil, false, fmt.Errorf("create key %s: %w", path, err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, false, fmt.Errorf("create key %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create key directory: %w", err)
	}
	if err := Create(path, append(seed, '\n')); err != nil {
		return nil, false, err
	}
	return kp, true, nil
}

// Create writes data to a new file at path with mode 0600. It never
// overwrites a file (an error wrapping fs.ErrExist says so), and never
// leaves a half-written one: the data goes to a temporary file beside
// path that is linked into place once complete.
func Create(path string, data []byte) error {
	tmp, err := writeTemp(path, data, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	err = link(tmp, path)
	if err != nil && linkUnsupported(err) {
		// No hard links here (vfat, some FUSE or SMB mounts): create the
		// file itself, exclusively. A crash while writing may leave it
		// half-written, which reading it then reports.
		return createExcl(path, data)
	}
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
				return fmt.Errorf("create %s: %w", path, symlinkError("file", path))
			}
		}
		return fmt.Errorf("create %s: %w", path, unwrapLink(err))
	}
	return nil
}

// link is os.Link; tests replace it to stand for a filesystem without
// hard links.
var link = os.Link

// createExcl writes data to a new file at path, mode 0600, that must not
// exist (not even as a symbolic link), synced before it is closed.
func createExcl(path string, data []byte) error {
	f, err := openExcl(path)
	if err != nil {
		if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("create %s: %w", path, symlinkError("file", path))
		}
		return fmt.Errorf("create %s: %w", path, unwrapPath(err))
	}
	if err := fill(f, data); err != nil {
		os.Remove(path)
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// fill writes data to f, syncs and closes it: the first error is said.
func fill(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// unwrapPath turns an *fs.PathError into its underlying error, the path
// being said already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// unwrapLink turns os.Link's error about both names into the underlying
// one (fs.ErrExist for a file already there).
func unwrapLink(err error) error {
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// WriteAtomic replaces the file at path with data and mode perm: the data
// goes to a temporary file beside path, synced and renamed into place, so
// a crash never leaves a half-written file.
func WriteAtomic(path string, data []byte, perm fs.FileMode) error {
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeTemp writes data, synced, to a new temporary file of mode perm
// beside path and returns its name.
func writeTemp(path string, data []byte, perm fs.FileMode) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Chmod(perm); err != nil {
		f.Close()
	} else {
		err = fill(f, data)
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return f.Name(), nil
}
