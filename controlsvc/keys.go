package controlsvc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/internal/keyfile"
	"github.com/nats-io/nkeys"
)

// Keys are the control service's own identities. They live as nkey seed
// files (mode 0600) under <data>/keys/.
type Keys struct {
	// Issuer signs callout responses and user JWTs (an account key).
	Issuer nkeys.KeyPair
	// XKey decrypts callout requests and encrypts responses (a curve key).
	XKey nkeys.KeyPair
	// Sys, Control and Fleet are the service's users in the SYS, CONTROL
	// and FLEET accounts; Calls watches calls (FLEET) and Announce
	// publishes presence events and hints only (FLEET).
	Sys, Control, Fleet, Calls, Announce nkeys.KeyPair
}

// BrokerAuthFile is the file, in the data directory, holding the public
// keys a stand-alone broker (cc-broker --auth FILE) needs; the broker
// reads it with broker.LoadAuthKeys.
const BrokerAuthFile = broker.AuthFile

var keySpecs = []struct {
	file   string
	create func() (nkeys.KeyPair, error)
	field  func(*Keys) *nkeys.KeyPair
}{
	{"callout-issuer.nk", nkeys.CreateAccount, func(k *Keys) *nkeys.KeyPair { return &k.Issuer }},
	{"callout-xkey.nk", nkeys.CreateCurveKeys, func(k *Keys) *nkeys.KeyPair { return &k.XKey }},
	{"control-sys.nk", nkeys.CreateUser, func(k *Keys) *nkeys.KeyPair { return &k.Sys }},
	{"control-auth.nk", nkeys.CreateUser, func(k *Keys) *nkeys.KeyPair { return &k.Control }},
	{"control-fleet.nk", nkeys.CreateUser, func(k *Keys) *nkeys.KeyPair { return &k.Fleet }},
	{"control-calls.nk", nkeys.CreateUser, func(k *Keys) *nkeys.KeyPair { return &k.Calls }},
	{"control-announce.nk", nkeys.CreateUser, func(k *Keys) *nkeys.KeyPair { return &k.Announce }},
}

// LoadOrCreateKeys reads the service's keys from dataDir/keys, creating any
// that are missing, and writes dataDir/broker-auth.json with their public
// halves.
func LoadOrCreateKeys(dataDir string) (*Keys, error) {
	dir := filepath.Join(dataDir, "keys")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	k := &Keys{}
	for _, s := range keySpecs {
		kp, err := LoadOrCreateSeed(filepath.Join(dir, s.file), s.create)
		if err != nil {
			return nil, err
		}
		*s.field(k) = kp
	}
	auth, err := k.BrokerAuth()
	if err != nil {
		return nil, err
	}
	if err := auth.Validate(); err != nil {
		return nil, fmt.Errorf("key files in %s are not of the kinds expected (%v); move the directory away to create new keys", dir, err)
	}
	b, _ := json.MarshalIndent(auth, "", "  ")
	if err := writeFileAtomic(filepath.Join(dataDir, BrokerAuthFile), append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	return k, nil
}

// BrokerAuth returns the public keys the broker is configured with.
func (k *Keys) BrokerAuth() (broker.AuthKeys, error) {
	var a broker.AuthKeys
	var err error
	pub := func(kp nkeys.KeyPair) string {
		p, e := kp.PublicKey()
		if e != nil {
			err = e
		}
		return p
	}
	a.CalloutIssuer = pub(k.Issuer)
	a.CalloutXKey = pub(k.XKey)
	a.SysUser = pub(k.Sys)
	a.ControlUser = pub(k.Control)
	a.FleetUser = pub(k.Fleet)
	a.CallsUser = pub(k.Calls)
	a.AnnounceUser = pub(k.Announce)
	return a, err
}

// LoadOrCreateSeed reads an nkey seed file, or creates it with mode 0600
// when it does not exist. A seed file readable by group or others is
// refused: fix it with chmod 600.
func LoadOrCreateSeed(path string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	kp, _, err := keyfile.LoadOrCreateSeed(seedWhat, path, create)
	return kp, err
}

// seedWhat is what the service's refusals call a seed file.
const seedWhat = "key file"

// checkSeedMode refuses a seed file at path that group or others can read;
// a missing file is not an error.
func checkSeedMode(path string) error {
	err := keyfile.Check(seedWhat, path)
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist):
		return nil
	case errors.Is(err, keyfile.ErrUnsafe):
		return err
	}
	return fmt.Errorf("key file %s: %w", path, err)
}

// writeFileAtomic writes data to a temporary file beside path and renames
// it into place, so a crash never leaves a half-written file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	return keyfile.WriteAtomic(path, data, perm)
}
