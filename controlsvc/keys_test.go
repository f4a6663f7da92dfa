package controlsvc

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/broker"
)

var seedFiles = []string{"callout-issuer.nk", "callout-xkey.nk", "control-sys.nk", "control-auth.nk", "control-fleet.nk"}

func TestLoadOrCreateKeysCreates(t *testing.T) {
	dir := t.TempDir()
	k, err := LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range seedFiles {
		fi, err := os.Stat(filepath.Join(dir, "keys", f))
		if err != nil {
			t.Fatalf("seed file %s: %v", f, err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s mode: got %v, want %v", f, got, os.FileMode(0o600))
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("keys directory mode: got %v, want %v", got, os.FileMode(0o700))
	}
	// Each key is of the kind its role needs.
	kinds := []struct {
		name string
		kp   nkeys.KeyPair
		want nkeys.PrefixByte
	}{
		{"issuer", k.Issuer, nkeys.PrefixByteAccount},
		{"xkey", k.XKey, nkeys.PrefixByteCurve},
		{"sys", k.Sys, nkeys.PrefixByteUser},
		{"control", k.Control, nkeys.PrefixByteUser},
		{"fleet", k.Fleet, nkeys.PrefixByteUser},
	}
	for _, kk := range kinds {
		pub, err := kk.kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		if got := nkeys.Prefix(pub); got != kk.want {
			t.Errorf("%s key kind: got %v, want %v", kk.name, got, kk.want)
		}
	}

	auth, err := broker.LoadAuthKeys(filepath.Join(dir, BrokerAuthFile))
	if err != nil {
		t.Fatal(err)
	}
	want, err := k.BrokerAuth()
	if err != nil {
		t.Fatal(err)
	}
	if auth != want {
		t.Fatalf("broker-auth.json: got %+v, want %+v", auth, want)
	}
	if auth.CalloutXKey == "" {
		t.Fatal("broker-auth.json has no xkey")
	}
}

func TestLoadOrCreateKeysReloads(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	a1, _ := k1.BrokerAuth()
	a2, _ := k2.BrokerAuth()
	if a1 != a2 {
		t.Fatalf("second load: got %+v, want %+v", a2, a1)
	}
	s1, _ := k1.Issuer.Seed()
	s2, _ := k2.Issuer.Seed()
	if string(s1) != string(s2) {
		t.Fatal("issuer seed changed between loads")
	}
}

// TestLoadOrCreateKeysCreatesOnlyMissing: deleting one seed replaces that
// key only.
func TestLoadOrCreateKeysCreatesOnlyMissing(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "keys", "control-fleet.nk")); err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	a1, _ := k1.BrokerAuth()
	a2, _ := k2.BrokerAuth()
	if a1.FleetUser == a2.FleetUser {
		t.Fatal("the deleted fleet key came back unchanged")
	}
	a1.FleetUser = a2.FleetUser
	if a1 != a2 {
		t.Fatalf("other keys changed: got %+v, want %+v", a2, a1)
	}
	got, err := broker.LoadAuthKeys(filepath.Join(dir, BrokerAuthFile))
	if err != nil || got != a2 {
		t.Fatalf("broker-auth.json not rewritten: got %+v, %v; want %+v", got, err, a2)
	}
}

func TestSeedReadableByOthersIsRefused(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreateKeys(dir); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "keys", "control-sys.nk")
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreateKeys(dir)
		if err == nil {
			t.Fatalf("mode %v: a seed readable by others was accepted", mode)
		}
		if !strings.Contains(err.Error(), "chmod 600 "+p) {
			t.Fatalf("mode %v: error %q does not say chmod 600 %s", mode, err, p)
		}
	}
	if err := os.Chmod(p, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKeys(dir); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
}

func TestLoadSeedErrors(t *testing.T) {
	dir := t.TempDir()
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	tests := []struct {
		name    string
		content string
		want    string
	}{
		{"garbage", "not a seed\n", "does not hold an nkey seed"},
		{"public key", pub + "\n", "does not hold an nkey seed"},
		{"empty", "", "does not hold an nkey seed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name+".nk")
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadSeed(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("got %v, want an error containing %q and the path", err, tt.want)
			}
			// LoadOrCreateSeed must not overwrite a bad file.
			if _, err := LoadOrCreateSeed(p, nkeys.CreateUser); err == nil {
				t.Fatal("LoadOrCreateSeed replaced an unreadable seed")
			}
		})
	}
	// Surrounding whitespace is fine.
	p := filepath.Join(dir, "spaced.nk")
	if err := os.WriteFile(p, []byte("  "+string(seed)+"\r\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadSeed(p)
	if err != nil {
		t.Fatal(err)
	}
	if gp, _ := got.PublicKey(); gp != pub {
		t.Fatalf("got key %q, want %q", gp, pub)
	}
}

// TestLoadOrCreateKeysChecksKind: a seed of the wrong kind in a key file
// (e.g. a user seed in callout-issuer.nk) should be refused at load, not
// discovered later as a broker that refuses everyone.
func TestLoadOrCreateKeysChecksKind(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreateKeys(dir); err != nil {
		t.Fatal(err)
	}
	user, _ := nkeys.CreateUser()
	seed, _ := user.Seed()
	if err := os.WriteFile(filepath.Join(dir, "keys", "callout-issuer.nk"), append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKeys(dir); err == nil {
		t.Fatal("a user seed was accepted as the callout issuer")
	}
}

// TestAdminSeedReadableByOthersIsRefused: admin.nk is read on the first
// start only, but it stays an admin's identity, so every start refuses it
// when group or others can read it, as keys/*.nk are refused.
func TestAdminSeedReadableByOthersIsRefused(t *testing.T) {
	dir := t.TempDir()
	s1, err := New(Config{DataDir: dir, Broker: broker.Config{Listen: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	s1.Close()
	p := filepath.Join(dir, AdminKeyFile)
	if _, err := New(Config{DataDir: dir}); err != nil {
		t.Fatalf("second start with admin.nk at 0600: %v", err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		_, err := New(Config{DataDir: dir})
		want := fmt.Sprintf("key file %s has mode %#o", p, mode)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "chmod 600 "+p) {
			t.Fatalf("mode %v: got %v, want a refusal saying %q and chmod 600 %s", mode, err, want, p)
		}
	}
	// On the first start too (the admin seed placed before it).
	first := t.TempDir()
	kp, _ := newUser(t)
	seed, _ := kp.Seed()
	if err := os.WriteFile(filepath.Join(first, AdminKeyFile), seed, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(first, AdminKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{DataDir: first}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("first start with admin.nk at 0644: got %v, want a refusal", err)
	}
}
