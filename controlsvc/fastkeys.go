package controlsvc

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/nacl/box"
)

// The callout signs two JWTs and opens and seals one box per connection.
// nkeys derives the ed25519 key from the seed on every Sign and the curve
// shared key on every Seal/Open; both are fixed for the service's life, so
// they are derived once here. The wire formats are nkeys' own.

// cachedSigner is an nkeys.KeyPair whose Sign and PublicKey use values
// derived once (jwt's Encode asks for the public key on every call).
type cachedSigner struct {
	nkeys.KeyPair
	priv ed25519.PrivateKey
	pub  string
}

func newCachedSigner(kp nkeys.KeyPair) (nkeys.KeyPair, error) {
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	_, raw, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, err
	}
	if len(raw) != ed25519.SeedSize {
		return nil, errors.New("not an ed25519 seed")
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	return &cachedSigner{KeyPair: kp, priv: ed25519.NewKeyFromSeed(raw), pub: pub}, nil
}

// PublicKey returns the cached public key.
func (s *cachedSigner) PublicKey() (string, error) { return s.pub, nil }

// Sign signs input with the cached private key.
func (s *cachedSigner) Sign(input []byte) ([]byte, error) { return ed25519.Sign(s.priv, input), nil }

// boxCache seals and opens nkeys xkey boxes with shared keys precomputed
// once per peer (in practice: once per broker).
type boxCache struct {
	priv   [32]byte
	mu     sync.Mutex
	shared map[string]*[32]byte
}

const xkeyNonceLen = 24

func newBoxCache(kp nkeys.KeyPair) (*boxCache, error) {
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	prefix, raw, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, err
	}
	if prefix != nkeys.PrefixByteCurve || len(raw) != 32 {
		return nil, errors.New("not a curve (xkey) seed")
	}
	b := &boxCache{shared: map[string]*[32]byte{}}
	copy(b.priv[:], raw)
	return b, nil
}

func (b *boxCache) key(peer string) (*[32]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if k, ok := b.shared[peer]; ok {
		return k, nil
	}
	raw, err := nkeys.Decode(nkeys.PrefixByteCurve, []byte(peer))
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("peer xkey %q is not a curve public key", peer)
	}
	var pub [32]byte
	copy(pub[:], raw)
	k := new([32]byte)
	box.Precompute(k, &pub, &b.priv)
	if len(b.shared) > 64 { // a handful of brokers; never grow without bound
		clear(b.shared)
	}
	b.shared[peer] = k
	return k, nil
}

// open decrypts a box peer sealed for us (nkeys' Open).
func (b *boxCache) open(in []byte, peer string) ([]byte, error) {
	v := nkeys.XKeyVersionV1
	if len(in) <= len(v)+xkeyNonceLen || string(in[:len(v)]) != v {
		return nil, nkeys.ErrInvalidEncrypted
	}
	k, err := b.key(peer)
	if err != nil {
		return nil, err
	}
	var nonce [xkeyNonceLen]byte
	copy(nonce[:], in[len(v):])
	out, ok := box.OpenAfterPrecomputation(nil, in[len(v)+xkeyNonceLen:], &nonce, k)
	if !ok {
		return nil, nkeys.ErrCouldNotDecrypt
	}
	return out, nil
}

// seal encrypts for peer (nkeys' Seal).
func (b *boxCache) seal(in []byte, peer string) ([]byte, error) {
	k, err := b.key(peer)
	if err != nil {
		return nil, err
	}
	var nonce [xkeyNonceLen]byte
	if _, err := io.ReadFull(rand.Reader, nonce[:]); err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(nkeys.XKeyVersionV1)+xkeyNonceLen+len(in)+box.Overhead)
	out = append(out, nkeys.XKeyVersionV1...)
	out = append(out, nonce[:]...)
	return box.SealAfterPrecomputation(out, in, &nonce, k), nil
}
