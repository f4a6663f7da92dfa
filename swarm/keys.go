package swarm

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"

	"github.com/commandcontrol/commandcontrol/internal/keyfile"
	"github.com/nats-io/nkeys"
)

// seedLen is the length of a user seed's text (SU…).
const seedLen = 58

// memberKeys returns n user key pairs: those saved in file when it
// exists (it must hold exactly n), or n new ones, which are then saved
// there (a new file, mode 0600) so a later swarm with the same file is
// the same machines, already registered. Empty file: new keys, not
// saved. The file is a key file like any other (internal/keyfile): one
// others could read or write, or a symbolic link, is refused — whoever
// chose its seeds would be registered as these machines.
func memberKeys(file string, n int) ([]nkeys.KeyPair, error) {
	if file != "" {
		b, err := keyfile.ReadMax("swarm keys file", file, n*(seedLen+2)+64)
		if err == nil {
			return parseMemberKeys(file, b, n)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("swarm keys: %w", err)
		}
	}
	kps := make([]nkeys.KeyPair, n)
	var out bytes.Buffer
	for i := range kps {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return nil, err
		}
		kps[i] = kp
		if file != "" {
			seed, _ := kp.Seed()
			out.Write(seed)
			out.WriteByte('\n')
		}
	}
	if file != "" {
		if err := keyfile.Create(file, out.Bytes()); err != nil {
			return nil, fmt.Errorf("swarm keys: %w", err)
		}
	}
	return kps, nil
}

func parseMemberKeys(file string, b []byte, n int) ([]nkeys.KeyPair, error) {
	lines := bytes.Fields(b)
	if len(lines) != n {
		return nil, fmt.Errorf("swarm keys %s: holds %d member keys, the swarm has %d agents (use the --agents it was made with, or another file)", file, len(lines), n)
	}
	kps := make([]nkeys.KeyPair, n)
	for i, l := range lines {
		kp, err := nkeys.FromSeed(l)
		if err != nil {
			return nil, fmt.Errorf("swarm keys %s: line %d: %w", file, i+1, err)
		}
		if _, err := kp.Seed(); err != nil || !bytes.HasPrefix(l, []byte("SU")) {
			return nil, fmt.Errorf("swarm keys %s: line %d is not a user seed", file, i+1)
		}
		kps[i] = kp
	}
	return kps, nil
}
