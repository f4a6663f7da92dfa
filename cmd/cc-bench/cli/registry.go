package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/keyfile"
)

var registryHelp = help{
	usage: "cc-bench registry export FILE [--force] | import FILE",
	about: `Back up and restore the registry: registered and pending machines,
operators and apps (admins). The file is registry.json's format, so the
registry.json of a control service from before the registry moved to
JetStream (kept in its data directory as a backup) can be imported too.

  export  write the whole registry to FILE (a new file of mode 0600;
          --force replaces an existing one). It holds public keys only,
          no secret, but it is the list of who may connect
  import  write FILE's entries into the registry: those missing are
          added, those that differ are changed to the file's (the live
          connections of a machine or operator whose key or role changes
          are closed, and the sessions of a changed app), identical ones
          skipped; entries only in the registry are kept. Pending machines
          are only added. It reports what it added, changed and skipped

Large registries go in pages and pieces, each within the broker's
message size.`,
	examples: `cc-bench registry export ./registry-backup.json
cc-bench registry import ./registry-backup.json
cc-bench registry import /var/lib/cc-control/registry.json --json`,
}

// registryFile is a registry file: registry.json's shape.
type registryFile struct {
	Version int `json:"version"`
	fleet.RegistryPart
}

func runRegistry(e *env, args []string) error {
	fs := e.flagSet("registry")
	force := fs.Bool("force", false, "for export: replace FILE if it exists")
	pos, err := e.parse(fs, args, registryHelp)
	if err != nil {
		return err
	}
	if err := notAPublicKey(e.g.key); err != nil {
		return err
	}
	if len(pos) == 0 {
		return usageErrorf("registry needs a subcommand: export FILE or import FILE (see cc-bench registry --help)")
	}
	sub, pos := pos[0], pos[1:]
	switch sub {
	case "export":
		return needArgs(sub, pos, 1, "FILE", func() error { return registryExport(e, pos[0], *force) })
	case "import":
		return needArgs(sub, pos, 1, "FILE", func() error { return registryImport(e, pos[0]) })
	}
	return usageErrorf("unknown registry subcommand %q; want export or import", sub)
}

// registryPages is how many --timeout a whole export or import may take:
// it is many requests, each answered within --timeout.
const registryPages = 50

// contextFor is a context for n requests' worth of --timeout.
func contextFor(e *env, n int) (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.ctx, time.Duration(n)*e.g.timeout)
}

func registryExport(e *env, path string, force bool) error {
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return usageErrorf("%s exists already; name a new file, or replace it with --force", path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := contextFor(e, registryPages)
		defer cancel()
		part, err := c.RegistryExport(ctx, nil)
		if err != nil {
			return err
		}
		f := registryFile{Version: 1, RegistryPart: part}
		if f.Machines == nil {
			f.Machines = map[string]*fleet.Machine{}
		}
		if f.Operators == nil {
			f.Operators = map[string]*fleet.Operator{}
		}
		b, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			return err
		}
		if err := keyfile.WriteAtomic(path, append(b, '\n'), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		sum := map[string]int{"machines": len(f.Machines), "pending": len(f.Pending), "operators": len(f.Operators), "apps": len(f.Apps)}
		if e.g.json {
			return jsonLine(e.stdout, map[string]any{"file": path, "entries": sum})
		}
		return printf(e.stdout, "exported %d machines, %d pending machines, %d operators and %d apps to %s\n",
			sum["machines"], sum["pending"], sum["operators"], sum["apps"], path)
	})
}

func registryImport(e *env, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read the registry file: %w", err)
	}
	var f registryFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return usageErrorf("%s is not a registry file (version, machines, pending, operators, apps): %v", path, err)
	}
	if f.Version != 1 {
		return usageErrorf("%s has version %d; this cc-bench reads version 1", path, f.Version)
	}
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := contextFor(e, registryPages)
		defer cancel()
		r, err := c.RegistryImport(ctx, f.RegistryPart, nil)
		if err != nil {
			return fmt.Errorf("import %s: %w (entries before the failure are in; importing the file again skips them)", path, err)
		}
		if e.g.json {
			return jsonLine(e.stdout, r)
		}
		if err := printf(e.stdout, "imported %s: added %s; changed %s; skipped %s\n", path,
			counts(r.Added), counts(r.Changed), counts(r.Skipped)); err != nil {
			return err
		}
		if r.Closed > 0 {
			return printf(e.stdout, "closed %d live connection%s whose key, role or app changed\n", r.Closed, plural(r.Closed))
		}
		return nil
	})
}

// counts renders per-kind counts: "3 machines, 1 operators" or "nothing".
func counts(m map[string]int) string {
	var parts []string
	for _, k := range []string{"machines", "pending", "operators", "apps"} {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
		}
	}
	var rest []string
	for k, n := range m {
		if n > 0 && k != "machines" && k != "pending" && k != "operators" && k != "apps" {
			rest = append(rest, fmt.Sprintf("%d %s", n, k))
		}
	}
	sort.Strings(rest)
	parts = append(parts, rest...)
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}
