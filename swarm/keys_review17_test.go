package swarm_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/commandcontrol/commandcontrol/internal/keyfile"
	"github.com/commandcontrol/commandcontrol/swarm"
	"github.com/nats-io/nkeys"
)

// Review of issue #17: cc-swarm --keys reads and writes its members' seeds
// with plain os.ReadFile / os.WriteFile, not internal/keyfile. Those seeds
// become registered, accepted machines (--key registers them, the keys
// file is meant to be reused by later runs): whoever chose them can
// connect as those machines and answer every call in their names.

// attackerSeeds writes n user seeds the attacker keeps to path, with mode,
// and returns their public keys.
func attackerSeeds(t *testing.T, path string, n int, mode os.FileMode) []string {
	t.Helper()
	var b bytes.Buffer
	pubs := make([]string, n)
	for i := range n {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := kp.Seed()
		pubs[i], _ = kp.PublicKey()
		b.Write(seed)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, b.Bytes(), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return pubs
}

// TestReview17SwarmKeysFileReadableByOthersRefused: a keys file group and
// others can read (or another user wrote, in a directory others can
// write) is used as is: its seeds are registered as the swarm's machines.
// keyfile.Read refuses such a file for every other seed in the project.
func TestReview17SwarmKeysFileReadableByOthersRefused(t *testing.T) {
	const n = 3
	keys := filepath.Join(t.TempDir(), "members.keys")
	pubs := attackerSeeds(t, keys, n, 0o644)
	sw, err := swarm.New(swarm.Config{URL: "nats://127.0.0.1:1", N: n, Prefix: "r", KeysFile: keys})
	if err == nil {
		defer sw.Close()
		regs := sw.Registrations()
		t.Fatalf("a keys file of mode 0644 was used: machine %s would be registered with key %s (attacker's %s); want an error like keyfile's (chmod 600)",
			regs[0].ID, regs[0].Key, pubs[0])
	}
	if !errors.Is(err, keyfile.ErrUnsafe) {
		t.Fatalf("got %v, want a keyfile.ErrUnsafe refusal", err)
	}
}

// TestReview17SwarmKeysFileSymlinkRefused: the keys path is a symbolic
// link (planted where the operator keeps the file, e.g. a shared
// directory): its target's seeds are read and registered; a dangling
// link is written through, creating the seeds file where the link points.
func TestReview17SwarmKeysFileSymlinkRefused(t *testing.T) {
	const n = 3
	dir := t.TempDir()
	target := filepath.Join(dir, "planted.keys")
	attackerSeeds(t, target, n, 0o600)
	link := filepath.Join(dir, "members.keys")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if sw, err := swarm.New(swarm.Config{URL: "nats://127.0.0.1:1", N: n, Prefix: "r", KeysFile: link}); err == nil {
		sw.Close()
		t.Errorf("keys file %s, a symbolic link to %s, was read: want it refused (keyfile.ErrUnsafe)", link, target)
	}
	dangling := filepath.Join(dir, "new.keys")
	elsewhere := filepath.Join(dir, "elsewhere.keys")
	if err := os.Symlink(elsewhere, dangling); err != nil {
		t.Fatal(err)
	}
	if sw, err := swarm.New(swarm.Config{URL: "nats://127.0.0.1:1", N: n, Prefix: "r", KeysFile: dangling}); err == nil {
		sw.Close()
	}
	if _, err := os.Lstat(elsewhere); err == nil {
		t.Errorf("new seeds were written through the dangling link %s to %s: want the file created exclusively (keyfile.Create)", dangling, elsewhere)
	}
}
