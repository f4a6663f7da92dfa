//go:build unix

package keyfile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/internal/keyfile"
)

// plantSeed writes a new user seed, mode 0600, at path and returns its
// public key.
func plantSeed(t *testing.T, path string) string {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	if err := os.WriteFile(path, append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return pub
}

// wantUnsafe fails unless err is a refusal (ErrUnsafe) whose message
// says each of says.
func wantUnsafe(t *testing.T, label string, err error, says ...string) {
	t.Helper()
	if !errors.Is(err, keyfile.ErrUnsafe) {
		t.Fatalf("%s: got %v, want a refusal (ErrUnsafe)", label, err)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: error %q does not say %q", label, err, s)
		}
	}
}

// TestForeignOwnedSeedRefused: a 0600 seed owned by another user (who can
// read it: they planted it, in a directory they can write such as /tmp)
// is refused, directly or behind a symbolic link, rather than taken as
// this process's identity. The message names both uids and the chown.
// Needs root to plant a file owned by another user.
func TestForeignOwnedSeedRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to plant a file owned by another user")
	}
	shared := t.TempDir() // stands for a directory another user can write
	planted := filepath.Join(shared, "cc-agent.nk")
	attacker := plantSeed(t, planted)
	if err := os.Chown(planted, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	kp, _, err := keyfile.LoadOrCreateSeed("key file", planted, nkeys.CreateUser)
	if kp != nil {
		if pub, _ := kp.PublicKey(); pub == attacker {
			t.Fatalf("a seed owned by uid 65534 was accepted as this process's identity")
		}
	}
	wantUnsafe(t, "foreign owner", err, "key file "+planted+" is owned by uid 65534, not by uid 0 who runs this",
		"run: chown 0 "+planted)
	for _, f := range []func(string, string) error{
		keyfile.Check,
		func(w, p string) error { _, err := keyfile.Read(w, p); return err },
	} {
		wantUnsafe(t, "Check/Read", f("key file", planted), "owned by uid 65534")
	}

	// A symbolic link at the key path to the attacker's own file.
	link := filepath.Join(t.TempDir(), "agent.nk")
	if err := os.Symlink(planted, link); err != nil {
		t.Fatal(err)
	}
	_, _, err = keyfile.LoadOrCreateSeed("key file", link, nkeys.CreateUser)
	wantUnsafe(t, "symlink to foreign", err, "key file "+link+" is a symbolic link")

	// Root's own files are accepted whoever runs: a root-owned key read
	// by another user is that user's to refuse by mode, not by owner.
	own := filepath.Join(t.TempDir(), "own.nk")
	plantSeed(t, own)
	if _, err := keyfile.Read("key file", own); err != nil {
		t.Errorf("root's own key: %v", err)
	}
}

// TestSymlinkedKeyRefused: a key path that is a symbolic link is refused
// by name, even to this user's own good seed; a dangling one is refused
// too (it used to say "create …: file exists"), and nothing is created
// where it points.
func TestSymlinkedKeyRefused(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.nk")
	plantSeed(t, real)
	link := filepath.Join(dir, "agent.nk")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	_, _, err := keyfile.LoadOrCreateSeed("key file", link, nkeys.CreateUser)
	wantUnsafe(t, "symlink", err, "key file "+link+" is a symbolic link (to "+real+")", "pass the real file's path")
	wantUnsafe(t, "Check symlink", keyfile.Check("TLS key", link), "TLS key "+link+" is a symbolic link")

	nothing := filepath.Join(dir, "nothing-yet")
	dangling := filepath.Join(dir, "d.nk")
	if err := os.Symlink(nothing, dangling); err != nil {
		t.Fatal(err)
	}
	_, created, err := keyfile.LoadOrCreateSeed("key file", dangling, nkeys.CreateUser)
	if created {
		t.Errorf("created a key behind a dangling symlink")
	}
	wantUnsafe(t, "dangling symlink", err, "key file "+dangling+" is a symbolic link (to "+nothing+")")
	if _, err := os.Lstat(nothing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("followed the dangling symlink: %s: %v", nothing, err)
	}
	if err := keyfile.Create(dangling, []byte("x\n")); !errors.Is(err, keyfile.ErrUnsafe) || !strings.Contains(err.Error(), "is a symbolic link") {
		t.Errorf("Create over a dangling symlink: got %v, want it refused as a symbolic link", err)
	}
}

// TestKeyInWritableDirRefused: a key in a directory group or others can
// write (without the sticky bit) is refused, naming the directory and the
// chmod; a sticky one (like /tmp) or t.TempDir() is fine, and so is a
// directory only its owner can write.
func TestKeyInWritableDirRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "agent.nk")
	plantSeed(t, p)
	for _, mode := range []fs.FileMode{0o777, 0o775, 0o757, 0o770} {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		_, _, err := keyfile.LoadOrCreateSeed("key file", p, nkeys.CreateUser)
		wantUnsafe(t, "dir "+mode.String(), err, "key file "+p+" is in directory "+dir+" of mode 0"+strconv.FormatUint(uint64(mode), 8),
			"run: chmod go-w "+dir)
	}
	for _, mode := range []fs.FileMode{0o777 | fs.ModeSticky, 0o755, 0o700} {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		if _, _, err := keyfile.LoadOrCreateSeed("key file", p, nkeys.CreateUser); err != nil {
			t.Errorf("dir %v: %v", mode, err)
		}
	}
	// A missing key in a writable directory is refused before one is
	// created there.
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, "new.nk")
	if _, created, err := keyfile.LoadOrCreateSeed("key file", q, nkeys.CreateUser); created || !errors.Is(err, keyfile.ErrUnsafe) {
		t.Errorf("missing key in a 0777 directory: created=%v err=%v", created, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil { // let t.TempDir clean up
		t.Fatal(err)
	}
}

// TestFIFOKeyRefused: something not a regular file at the key path (a
// FIFO, which would block a plain open) is refused at once.
func TestFIFOKeyRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.nk")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := keyfile.Read("key file", p)
	wantUnsafe(t, "fifo", err, "key file "+p+" is not a regular file")
}

// TestCreateWithoutHardLinks: where link(2) fails for want of support
// (vfat, some FUSE or SMB mounts), Create writes the file itself: 0600,
// never over an existing file or through a symbolic link, and no
// temporary file is left behind.
func TestCreateWithoutHardLinks(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EPERM, syscall.ENOTSUP, syscall.EOPNOTSUPP, syscall.EXDEV, syscall.EMLINK} {
		t.Run(errno.Error(), func(t *testing.T) {
			calls := 0
			defer keyfile.SetLink(func(o, n string) error {
				calls++
				return &os.LinkError{Op: "link", Old: o, New: n, Err: errno}
			})()
			dir := t.TempDir()
			p := filepath.Join(dir, "leaf-dc2.secret")
			if err := keyfile.Create(p, []byte("first\n")); err != nil {
				t.Fatalf("Create: %v", err)
			}
			if calls != 1 {
				t.Errorf("link called %d times, want 1", calls)
			}
			fi, err := os.Lstat(p)
			if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
				t.Fatalf("created %v, %v; want a regular file of mode 0600", fi, err)
			}
			if b, err := keyfile.Read("site secret", p); err != nil || string(b) != "first\n" {
				t.Errorf("read back %q, %v", b, err)
			}
			if err := keyfile.Create(p, []byte("second\n")); !errors.Is(err, fs.ErrExist) {
				t.Errorf("second Create: got %v, want fs.ErrExist", err)
			}
			if b, _ := os.ReadFile(p); string(b) != "first\n" {
				t.Errorf("file holds %q after a refused Create", b)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Errorf("directory holds %d entries, want the file only", len(ents))
			}
			elsewhere := filepath.Join(dir, "elsewhere")
			link := filepath.Join(dir, "linked.secret")
			if err := os.Symlink(elsewhere, link); err != nil {
				t.Fatal(err)
			}
			if err := keyfile.Create(link, []byte("x\n")); !errors.Is(err, keyfile.ErrUnsafe) {
				t.Errorf("Create over a dangling symlink: got %v, want a refusal", err)
			}
			if _, err := os.Lstat(elsewhere); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Create followed the symlink to %s", elsewhere)
			}
		})
	}
	// Any other link failure is reported, not worked around.
	defer keyfile.SetLink(func(o, n string) error {
		return &os.LinkError{Op: "link", Old: o, New: n, Err: syscall.EIO}
	})()
	p := filepath.Join(t.TempDir(), "s")
	if err := keyfile.Create(p, []byte("x")); !errors.Is(err, syscall.EIO) {
		t.Errorf("EIO: got %v", err)
	}
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("EIO: a file was left at %s", p)
	}
}

// rootOnlyDir makes a directory whose every ancestor belongs to root and
// is writable by no one else (t.TempDir() is below /tmp, which everyone
// may write), or skips.
func rootOnlyDir(t *testing.T) string {
	for _, base := range []string{"/run", "/var/lib", "/"} {
		if fi, err := os.Stat(base); err != nil || fi.Mode().Perm()&0o022 != 0 {
			continue
		}
		dir, err := os.MkdirTemp(base, "cc-keyfile-test-")
		if err != nil {
			continue
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	t.Skip("no directory below root-only ones to test in")
	return ""
}

// TestRootReadsServiceKeyInItsPrivateDir: root may use a key owned by
// another user in a service's private state directory (systemd's
// StateDirectory of a DynamicUser: 0700, below directories only root can
// write: `sudo cc-bench --key /var/lib/cc-control/admin.nk`), where only
// that user and root can have put it. It refuses the same key in a
// directory others may enter, in a user's own private directory below a
// directory anyone can write, and in a private directory below one the
// user owns (who could swap the whole directory for one of their own).
func TestRootReadsServiceKeyInItsPrivateDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to own files as another user")
	}
	const svc = 65534
	chown := func(uid int, paths ...string) {
		for _, p := range paths {
			if err := os.Chown(p, uid, uid); err != nil {
				t.Fatal(err)
			}
		}
	}
	mkdir := func(dir string, mode fs.FileMode) string {
		if err := os.Mkdir(dir, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return dir
	}
	for _, tc := range []struct {
		name string
		base string
		mode fs.FileMode
		ok   bool
	}{
		{"service state dir", rootOnlyDir(t), 0o700, true},
		{"dir others may enter", rootOnlyDir(t), 0o750, false},
		{"private dir below /tmp", t.TempDir(), 0o700, false},
	} {
		dir := mkdir(filepath.Join(tc.base, "state"), tc.mode)
		key := filepath.Join(dir, "admin.nk")
		plantSeed(t, key)
		chown(svc, key, dir)
		_, err := keyfile.Read("key file", key)
		if tc.ok && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.ok {
			wantUnsafe(t, tc.name, err, "owned by uid 65534")
		}
	}

	// A user's own top-level private directory (a 0700 home, or
	// /run/user/<uid>) sits in a directory others may enter: refused.
	home := rootOnlyDir(t)
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	user := mkdir(filepath.Join(home, "zz"), 0o700)
	ukey := filepath.Join(user, "cc-agent.nk")
	plantSeed(t, ukey)
	chown(svc, ukey, user)
	_, err := keyfile.Read("key file", ukey)
	wantUnsafe(t, "a user's own 0700 home", err, "owned by uid 65534")

	// A user who owns a directory above the key's can swap the key's
	// directory for a private one of their own.
	app := mkdir(filepath.Join(rootOnlyDir(t), "app"), 0o755)
	chown(svc, app)
	keys := mkdir(filepath.Join(app, "keys"), 0o700)
	key := filepath.Join(keys, "agent.nk")
	plantSeed(t, key)
	chown(svc, key, keys)
	_, err = keyfile.Read("key file", key)
	wantUnsafe(t, "private dir below a user's", err, "owned by uid 65534")

	// Through a symbolic link to the service's directory: the directory
	// checked is the one the file is in.
	state := mkdir(filepath.Join(rootOnlyDir(t), "state"), 0o700)
	skey := filepath.Join(state, "admin.nk")
	plantSeed(t, skey)
	chown(svc, skey, state)
	via := filepath.Join(rootOnlyDir(t), "link")
	if err := os.Symlink(state, via); err != nil {
		t.Fatal(err)
	}
	if _, err := keyfile.Read("key file", filepath.Join(via, "admin.nk")); err != nil {
		t.Errorf("service key through a link to its directory: %v", err)
	}
	// A relative path, from inside the service's directory.
	t.Chdir(state)
	if _, err := keyfile.Read("key file", "admin.nk"); err != nil {
		t.Errorf("service key by a relative path: %v", err)
	}
}

// TestHugeKeyRefused: a key file larger than MaxSize (a planted sparse
// file, say) is refused before it is read.
func TestHugeKeyRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "huge.nk")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(4 << 30); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	f.Close()
	_, err = keyfile.Read("key file", p)
	wantUnsafe(t, "huge", err, "is larger than 64 KiB")
}
