package keyfile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/internal/keyfile"
)

// TestReadRefusesReadableFile: a file group or others can read is refused
// with the one message: the file, its mode and the chmod to run.
func TestReadRefusesReadableFile(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no mode bits on Windows")
	}
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := keyfile.Read("cluster secret", p); err != nil || string(b) != "s3cret\n" {
		t.Fatalf("mode 0600: got %q, %v", b, err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o601} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		_, err := keyfile.Read("cluster secret", p)
		if !errors.Is(err, keyfile.ErrReadable) {
			t.Fatalf("mode %v: got %v, want ErrReadable", mode, err)
		}
		for _, s := range []string{"cluster secret " + p + " has mode 0" + octal(mode), "(" + mode.String() + ")", "run: chmod 600 " + p} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("mode %v: error %q does not say %q", mode, err, s)
			}
		}
	}
}

func octal(m os.FileMode) string {
	const digits = "01234567"
	p := uint32(m.Perm())
	return string([]byte{digits[p>>6&7], digits[p>>3&7], digits[p&7]})
}

// TestReadMissingFile: a missing file is fs.ErrNotExist, for the caller
// to say how to create it.
func TestReadMissingFile(t *testing.T) {
	_, err := keyfile.Read("key file", filepath.Join(t.TempDir(), "none"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want fs.ErrNotExist", err)
	}
}

// TestCreateNeverOverwrites: Create writes a new 0600 file and refuses to
// replace one, leaving no temporary file behind.
func TestCreateNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "leaf-dc2.secret")
	if err := keyfile.Create(p, []byte("first\n")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if err := keyfile.Create(p, []byte("second\n")); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Create: got %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "first\n" {
		t.Errorf("file holds %q after a refused Create", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want the key only", len(ents))
	}
}

// TestWriteAtomicReplaces: WriteAtomic replaces the file, mode and all.
func TestWriteAtomicReplaces(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := keyfile.WriteAtomic(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	if b, _ := os.ReadFile(p); string(b) != "new" || (runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600) {
		t.Errorf("got %q mode %v, want \"new\" mode 0600", b, fi.Mode().Perm())
	}
}

// TestLoadOrCreateSeed: the first call creates the directory and a 0600
// seed, the second reads the same key back; garbage is refused by name.
func TestLoadOrCreateSeed(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "agent.nk")
	kp1, created, err := keyfile.LoadOrCreateSeed("key file", p, nkeys.CreateUser)
	if err != nil || !created {
		t.Fatalf("first: created=%v err=%v", created, err)
	}
	kp2, created, err := keyfile.LoadOrCreateSeed("key file", p, nkeys.CreateUser)
	if err != nil || created {
		t.Fatalf("second: created=%v err=%v", created, err)
	}
	p1, _ := kp1.PublicKey()
	p2, _ := kp2.PublicKey()
	if p1 != p2 {
		t.Errorf("reloaded %s, created %s", p2, p1)
	}
	if err := os.WriteFile(p, []byte("not a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := keyfile.LoadOrCreateSeed("key file", p, nkeys.CreateUser); err == nil || !strings.Contains(err.Error(), "key file "+p+" does not hold an nkey seed") {
		t.Errorf("garbage: got %v", err)
	}
}
