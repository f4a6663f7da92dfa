// Package keyfile reads and writes the files that hold secrets: nkey
// seeds, the cluster and site secrets, TLS private keys. Each is written
// with mode 0600 and refused, on reading, when group or others can read
// it: whoever can read the file holds the identity or secret it carries.
// Every refusal says the same thing (ModeError): the file, its mode, and
// the chmod to run.
//
// Windows has no such mode bits (Go reports 0666 for every writable
// file), so there the file's ACL is left to the administrator and no mode
// is checked.
package keyfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/nats-io/nkeys"
)

// ErrReadable is what every ModeError is (test with errors.Is).
var ErrReadable = errors.New("key file readable by others")

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

// Is makes errors.Is(err, ErrReadable) true.
func (e *ModeError) Is(target error) bool { return target == ErrReadable }

// Check refuses the file at path, described as what, when group or others
// can read it. Its error for a file that cannot be stat'ed (one that does
// not exist: errors.Is fs.ErrNotExist) is os.Stat's.
func Check(what, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return checkMode(what, path, fi)
}

func checkMode(what, path string, fi fs.FileInfo) error {
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return &ModeError{What: what, Path: path, Mode: perm}
	}
	return nil
}

// Read returns the file at path after Check.
func Read(what, path string) ([]byte, error) {
	if err := Check(what, path); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
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
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("create %s: %w", path, unwrapLink(err))
	}
	return nil
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
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return f.Name(), nil
}
