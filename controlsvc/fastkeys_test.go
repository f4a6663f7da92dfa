package controlsvc

import (
	"bytes"
	"testing"

	"github.com/nats-io/nkeys"
)

// TestCachedSignerMatchesNkeys: signatures from the cached key verify
// with nkeys, exactly as the broker checks them.
func TestCachedSignerMatchesNkeys(t *testing.T) {
	kp, _ := nkeys.CreateAccount()
	s, err := newCachedSigner(kp)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("callout response")
	sig, err := s.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := kp.Verify(msg, sig); err != nil {
		t.Fatalf("nkeys does not verify the cached signer's signature: %v", err)
	}
	want, _ := kp.Sign(msg)
	if !bytes.Equal(sig, want) {
		t.Fatal("ed25519 is deterministic: the signatures must be equal")
	}
	if pub, _ := s.PublicKey(); pub[0] != 'A' {
		t.Fatalf("public key %q lost", pub)
	}
}

// TestBoxCacheInteroperatesWithNkeys: what the broker seals with nkeys we
// open, and what we seal the broker opens with nkeys.
func TestBoxCacheInteroperatesWithNkeys(t *testing.T) {
	ours, _ := nkeys.CreateCurveKeys()
	server, _ := nkeys.CreateCurveKeys()
	ourPub, _ := ours.PublicKey()
	serverPub, _ := server.PublicKey()
	b, err := newBoxCache(ours)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // the second and third use the cached shared key
		req := []byte("authorization request " + string(rune('a'+i)))
		sealed, err := server.Seal(req, ourPub)
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.open(sealed, serverPub)
		if err != nil || !bytes.Equal(got, req) {
			t.Fatalf("open: got %q, %v; want %q", got, err, req)
		}
		resp, err := b.seal([]byte("response"), serverPub)
		if err != nil {
			t.Fatal(err)
		}
		back, err := server.Open(resp, ourPub)
		if err != nil || string(back) != "response" {
			t.Fatalf("nkeys cannot open our box: %q, %v", back, err)
		}
	}
	if _, err := b.open([]byte("xkv1short"), serverPub); err == nil {
		t.Fatal("opened a truncated box")
	}
	other, _ := nkeys.CreateCurveKeys()
	forged, _ := other.Seal([]byte("x"), ourPub)
	if _, err := b.open(forged, serverPub); err == nil {
		t.Fatal("opened a box sealed by another key as the server's")
	}
	if _, err := newBoxCache(server); err != nil {
		t.Fatal(err)
	}
	acct, _ := nkeys.CreateAccount()
	if _, err := newBoxCache(acct); err == nil {
		t.Fatal("an account key was accepted as an xkey")
	}
}
