package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "alice.nk")
	stdout, stderr, code := cc(t, nil, "keygen", "--out", out)
	if code != exitOK || !strings.Contains(stderr, "operators add NAME --pubkey") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	pub := strings.TrimSpace(stdout)
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("seed file: %v, mode %v; want 0600", err, fi.Mode())
	}
	b, _ := os.ReadFile(out)
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := kp.PublicKey(); got != pub || !nkeys.IsValidPublicUserKey(pub) {
		t.Errorf("printed %q, the seed's key is %q", pub, got)
	}
	if strings.Contains(stdout+stderr, string(b[:10])) {
		t.Error("the seed was printed")
	}
	// Never overwritten without --force.
	if _, stderr, code := cc(t, nil, "keygen", "--out", out, "--type", "agent"); code != exitFailure || !strings.Contains(stderr, "exists") {
		t.Errorf("overwrite: exit %d, %q", code, stderr)
	}
	if again, _ := os.ReadFile(out); string(again) != string(b) {
		t.Error("the seed file changed without --force")
	}
	stdout, stderr, code = cc(t, nil, "keygen", "--out", out, "--type", "agent", "--force", "--json")
	if code != exitOK {
		t.Fatalf("--force: exit %d: %s", code, stderr)
	}
	if objs := jsonObjects(t, stdout); len(objs) != 1 || objs[0]["public_key"] == pub || objs[0]["type"] != "agent" {
		t.Errorf("--force --json: %v", objs)
	}
	for _, args := range [][]string{{"keygen"}, {"keygen", "--out", out, "--type", "root"}, {"keygen", "x", "--out", out}} {
		if _, _, code := cc(t, nil, args...); code != exitUsage {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}
