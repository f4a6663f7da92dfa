// Command demokeys makes the keys of the docker compose demo on the stack's
// first start: it runs in the compose file's "keys" service (the image
// ships it as /usr/local/bin/cc-demokeys) before the control service and
// the agents start. Running it again changes nothing.
//
// It keeps one nkey seed per demo agent and an operator seed in -keys, a
// directory (volume) no other service mounts, and derives from them what
// each reader gets:
//
//   - -control: preregister.json (the public keys, which cc-control
//     --preregister reads) and operator.nk, the operator's seed, for
//     cc-bench inside the control container or copied out;
//   - -agents/<id>/agent.nk: each agent's own seed, owned by -agent-owner
//     (the user the agents run as, which must own its key), mode 0600.
//
// The copies are rewritten from the seeds in -keys whenever they differ, so
// a copy changed in its volume is put back on the next start; the agents'
// copies, which root without capabilities cannot read back, are rewritten
// (atomically, with the same seed) on every start.
//
//	cc-demokeys -keys /demo/keys -control /demo/control -agents /demo/agents -agent-owner 65532:65532
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/commandcontrol/commandcontrol/internal/keyfile"
	"github.com/nats-io/nkeys"
)

// demoAgents are the compose file's agents: id and labels.
var demoAgents = []struct {
	ID     string
	Labels map[string]string
}{
	{"demo-1", map[string]string{"role": "web", "location": "New-Jersey"}},
	{"demo-2", map[string]string{"role": "web", "location": "New-Brunswick"}},
	{"demo-3", map[string]string{"role": "db", "location": "New-Jersey"}},
}

type machine struct {
	ID     string            `json:"id"`
	Key    string            `json:"key"`
	Labels map[string]string `json:"labels"`
}

type operator struct {
	Name string `json:"name"`
	Key  string `json:"key"`
	Role string `json:"role"`
}

// config is what the flags say.
type config struct {
	keys, control, agents string
	// owner of the agents' copies; -1 leaves the copies to the user
	// running demokeys.
	uid, gid int
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "demokeys:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	flags := flag.NewFlagSet("demokeys", flag.ContinueOnError)
	var c config
	var owner string
	flags.StringVar(&c.keys, "keys", "", "directory of the demo's seeds, which only demokeys reads (required)")
	flags.StringVar(&c.control, "control", "", "directory for preregister.json and operator.nk, mounted by the control service (required)")
	flags.StringVar(&c.agents, "agents", "", "directory holding one directory per demo agent, <id>/agent.nk (required)")
	flags.StringVar(&owner, "agent-owner", "", "UID:GID that owns the agents' keys: the user the agents run as (default: the user running demokeys)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: demokeys takes only flags", flags.Arg(0))
	}
	for _, f := range []struct{ name, val string }{{"-keys", c.keys}, {"-control", c.control}, {"-agents", c.agents}} {
		if f.val == "" {
			return fmt.Errorf("%s is required: the directory it names is a volume of the compose file's keys service", f.name)
		}
	}
	var err error
	if c.uid, c.gid, err = parseOwner(owner); err != nil {
		return err
	}
	return c.write(out)
}

// parseOwner reads -agent-owner: "" (-1, -1) or UID:GID, both numbers.
func parseOwner(s string) (uid, gid int, err error) {
	if s == "" {
		return -1, -1, nil
	}
	u, g, ok := strings.Cut(s, ":")
	uid, uerr := strconv.Atoi(u)
	gid, gerr := strconv.Atoi(g)
	if !ok || uerr != nil || gerr != nil || uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("-agent-owner %q: want UID:GID, two numbers such as 65532:65532", s)
	}
	return uid, gid, nil
}

func (c config) write(out io.Writer) error {
	seed := func(name string) (nkeys.KeyPair, []byte, error) {
		kp, _, err := keyfile.LoadOrCreateSeed("key file", filepath.Join(c.keys, name), nkeys.CreateUser)
		if err != nil {
			return nil, nil, err
		}
		s, err := kp.Seed()
		if err != nil {
			return nil, nil, err
		}
		return kp, append(s, '\n'), nil
	}
	var f struct {
		Machines  []machine  `json:"machines"`
		Operators []operator `json:"operators"`
	}
	changed := 0
	for _, a := range demoAgents {
		kp, s, err := seed(a.ID + ".nk")
		if err != nil {
			return err
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return err
		}
		f.Machines = append(f.Machines, machine{a.ID, pub, a.Labels})
		dir := filepath.Join(c.agents, a.ID)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("agent key directory: %w", err)
		}
		n, err := syncFile(filepath.Join(dir, "agent.nk"), s, 0o600, c.uid, c.gid)
		if err != nil {
			return err
		}
		changed += n
	}
	kp, s, err := seed("operator.nk")
	if err != nil {
		return err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return err
	}
	f.Operators = append(f.Operators, operator{"compose-admin", pub, "admin"})
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.control, 0o755); err != nil {
		return fmt.Errorf("control directory: %w", err)
	}
	n, err := syncFile(filepath.Join(c.control, "operator.nk"), s, 0o600, -1, -1)
	if err != nil {
		return err
	}
	changed += n
	if n, err = syncFile(filepath.Join(c.control, "preregister.json"), append(b, '\n'), 0o644, -1, -1); err != nil {
		return err
	}
	changed += n
	fmt.Fprintf(out, "demo keys ready (%d files written): %d agents in %s, preregister.json and operator.nk in %s\n",
		changed, len(demoAgents), c.agents, c.control)
	return nil
}

// syncFile makes the file at path hold data with mode perm, owned by
// uid:gid (-1: the user running this), and returns 1 when it had to
// write it, 0 when it already did. The data goes to a temporary file
// beside path, owned and moded before it is renamed into place: the file
// is never seen half-written or with another owner, and a symbolic link
// planted at path is replaced, not followed.
func syncFile(path string, data []byte, perm fs.FileMode, uid, gid int) (int, error) {
	if same(path, data, perm, uid, gid) {
		return 0, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(perm)
	if err == nil && uid >= 0 {
		err = tmp.Chown(uid, gid)
	}
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		if errors.Is(err, fs.ErrPermission) && uid >= 0 {
			return 0, fmt.Errorf("write %s owned by %d:%d: %w (chown needs root with CAP_CHOWN)", path, uid, gid, err)
		}
		return 0, fmt.Errorf("write %s: %w", path, err)
	}
	return 1, nil
}

// same reports whether path is a regular file (not a link) that holds
// data with mode perm and the wanted owner. A file it cannot read counts
// as different.
func same(path string, data []byte, perm fs.FileMode, uid, gid int) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != perm {
		return false
	}
	if fu, fg, ok := owner(fi); uid >= 0 && (!ok || fu != uid || fg != gid) {
		return false
	}
	b, err := os.ReadFile(path)
	return err == nil && bytes.Equal(b, data)
}
