package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/internal/keyfile"
)

type dirs struct{ keys, control, agents string }

func newDirs(t *testing.T) dirs {
	root := t.TempDir()
	return dirs{filepath.Join(root, "keys"), filepath.Join(root, "control"), filepath.Join(root, "agents")}
}

func (d dirs) args(extra ...string) []string {
	return append([]string{"-keys", d.keys, "-control", d.control, "-agents", d.agents}, extra...)
}

func readAll(t *testing.T, d dirs) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, p := range []string{
		filepath.Join(d.control, "preregister.json"), filepath.Join(d.control, "operator.nk"),
		filepath.Join(d.agents, "demo-1", "agent.nk"), filepath.Join(d.agents, "demo-2", "agent.nk"),
		filepath.Join(d.agents, "demo-3", "agent.nk"),
	} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[p] = b
	}
	return files
}

// TestDemoKeysLayoutAndIdempotence: every reader gets what it needs, keys
// are 0600 and pass keyfile's checks, the preregister file holds the public
// keys of the seeds handed out, and a second run writes nothing.
func TestDemoKeysLayoutAndIdempotence(t *testing.T) {
	d := newDirs(t)
	var out bytes.Buffer
	if err := run(d.args(), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "(5 files written)") {
		t.Errorf("first run: %q", out.String())
	}
	var pre struct {
		Machines []struct {
			ID, Key string
			Labels  map[string]string
		}
		Operators []struct{ Name, Key, Role string }
	}
	first := readAll(t, d)
	if err := json.Unmarshal(first[filepath.Join(d.control, "preregister.json")], &pre); err != nil {
		t.Fatal(err)
	}
	if len(pre.Machines) != 3 || len(pre.Operators) != 1 || pre.Operators[0].Role != "admin" {
		t.Fatalf("preregister: %+v", pre)
	}
	for _, m := range pre.Machines {
		p := filepath.Join(d.agents, m.ID, "agent.nk")
		kp, err := keyfile.ReadSeed("key file", p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if pub, _ := kp.PublicKey(); pub != m.Key {
			t.Errorf("%s: key %s, preregistered %s", m.ID, pub, m.Key)
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", p, fi.Mode())
		}
	}
	kp, err := keyfile.ReadSeed("key file", filepath.Join(d.control, "operator.nk"))
	if err != nil {
		t.Fatal(err)
	}
	if pub, _ := kp.PublicKey(); pub != pre.Operators[0].Key {
		t.Errorf("operator key %s, preregistered %s", pub, pre.Operators[0].Key)
	}

	out.Reset()
	if err := run(d.args(), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "(0 files written)") {
		t.Errorf("second run: %q", out.String())
	}
	second := readAll(t, d)
	for p, b := range first {
		if !bytes.Equal(b, second[p]) {
			t.Errorf("%s changed on the second run", p)
		}
	}
}

// TestDemoKeysRestoresCopies: an agent's copy changed or replaced by a
// symbolic link in its volume is put back from the seeds, the link
// replaced rather than followed.
func TestDemoKeysRestoresCopies(t *testing.T) {
	d := newDirs(t)
	if err := run(d.args(), io.Discard); err != nil {
		t.Fatal(err)
	}
	want := readAll(t, d)
	p1 := filepath.Join(d.agents, "demo-1", "agent.nk")
	if err := os.WriteFile(p1, []byte("SUAFORGED\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.WriteFile(target, []byte("untouched"), 0o600); err != nil {
		t.Fatal(err)
	}
	p2 := filepath.Join(d.agents, "demo-2", "agent.nk")
	if err := os.Remove(p2); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p2); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(d.args(), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "(2 files written)") {
		t.Errorf("run: %q", out.String())
	}
	got := readAll(t, d)
	for p, b := range want {
		if !bytes.Equal(b, got[p]) {
			t.Errorf("%s not restored", p)
		}
	}
	if fi, err := os.Lstat(p2); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("%s: want a regular file, have %v (%v)", p2, fi, err)
	}
	if b, _ := os.ReadFile(target); string(b) != "untouched" {
		t.Errorf("the link's target was written: %q", b)
	}
}

// TestDemoKeysAgentOwner: -agent-owner gives the agents' keys (only) to
// that user. Changing a file's owner needs root.
func TestDemoKeysAgentOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to another user needs root")
	}
	d := newDirs(t)
	if err := run(d.args("-agent-owner", "65532:65533"), io.Discard); err != nil {
		t.Fatal(err)
	}
	check := func(p string, uid, gid int) {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if u, g, ok := owner(fi); !ok || u != uid || g != gid || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: owner %d:%d mode %v, want %d:%d 0600", p, u, g, fi.Mode(), uid, gid)
		}
	}
	for _, id := range []string{"demo-1", "demo-2", "demo-3"} {
		check(filepath.Join(d.agents, id, "agent.nk"), 65532, 65533)
		check(filepath.Join(d.keys, id+".nk"), 0, 0)
	}
	check(filepath.Join(d.control, "operator.nk"), 0, 0)
}

// TestDemoKeysBadFlags: each mistake is named.
func TestDemoKeysBadFlags(t *testing.T) {
	d := newDirs(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-control", "c", "-agents", "a"}, "-keys is required"},
		{[]string{"-keys", "k", "-agents", "a"}, "-control is required"},
		{[]string{"-keys", "k", "-control", "c"}, "-agents is required"},
		{d.args("-agent-owner", "nobody"), `-agent-owner "nobody": want UID:GID`},
		{d.args("-agent-owner", "1:x"), `-agent-owner "1:x": want UID:GID`},
		{d.args("-agent-owner", "-1:5"), `want UID:GID`},
		{d.args("extra"), `unexpected argument "extra"`},
	} {
		err := run(tc.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.want)
		}
	}
	if _, err := os.Stat(d.keys); err == nil {
		t.Error("a refused run wrote keys")
	}
}
