package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

var machinesHelp = help{
	usage: `cc-bench machines ls | pending | accept ID | add ID --key PUBKEY [--label k=v]... |
                         rm ID | label ID k=v... [--rm-label k]...`,
	about: `Manage the registry of machines allowed to join (admins; viewers may ls
and pending).

  ls       every registered machine, online or not, with its labels
  pending  machines that tried to connect but are not registered
  accept   register a pending machine with the key it presented
  add      register a machine with its public nkey (U…) and labels
  rm       unregister a machine; its live connections are closed now
  label    set labels (k=v) and remove some (--rm-label k)`,
	examples: `cc-bench machines pending
cc-bench machines accept 10.0.0.5_web01
cc-bench machines add 10.0.0.6_web02 --key UABC... --label role=web --label location=New-Jersey
cc-bench machines label 10.0.0.6_web02 env=prod --rm-label staging`,
}

func runMachines(e *env, args []string) error {
	// For add, --key is the machine's public key, not the global operator
	// key file, so add parses its own flags.
	if i := firstPositional(args); i >= 0 && args[i] == "add" {
		return runMachinesAdd(e, append(args[:i:i], args[i+1:]...))
	}
	fs := e.flagSet("machines")
	var rmLabels listFlag
	fs.Var(&rmLabels, "rm-label", "a label `key` to remove, for label (repeatable)")
	pos, err := e.parse(fs, args, machinesHelp)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usageErrorf("machines needs a subcommand: ls, pending, accept, add, rm or label (see cc-bench machines --help)")
	}
	sub, pos := pos[0], pos[1:]
	switch sub {
	case "ls", "list":
		return needArgs(sub, pos, 0, "", func() error { return machinesList(e) })
	case "pending":
		return needArgs(sub, pos, 0, "", func() error { return machinesPending(e) })
	case "accept":
		return needArgs(sub, pos, 1, "ID", func() error { return machinesAccept(e, pos[0]) })
	case "rm", "remove":
		return needArgs(sub, pos, 1, "ID", func() error { return machinesRemove(e, pos[0]) })
	case "label":
		if len(pos) < 1 || (len(pos) < 2 && len(rmLabels) == 0) {
			return usageErrorf("usage: cc-bench machines label ID k=v... [--rm-label k]...")
		}
		set, err := keyValues("label", pos[1:])
		if err != nil {
			return err
		}
		return machinesLabel(e, pos[0], set, rmLabels)
	}
	return usageErrorf("unknown machines subcommand %q; want ls, pending, accept, add, rm or label", sub)
}

// needArgs runs fn when pos has exactly n arguments.
func needArgs(sub string, pos []string, n int, names string, fn func() error) error {
	if len(pos) != n {
		if n == 0 {
			return usageErrorf("%s takes no arguments, got %q", sub, pos)
		}
		return usageErrorf("%s needs %s (got %d arguments)", sub, names, len(pos))
	}
	return fn()
}

// withClient connects, runs fn with a request context, and closes.
func (e *env) withClient(fn func(c *bench.Client) error) error {
	c, err := e.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

func machinesList(e *env) error {
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		ms, err := c.Machines(ctx)
		if err != nil || e.g.json {
			return jsonLines(e, ms, err)
		}
		t := newTable(e.stdout, "ID", "ONLINE", "LABELS", "ADDED", "BY", "KEY")
		for _, m := range ms {
			online := "no"
			if m.Online {
				online = "yes"
			}
			t.row(m.ID, online, labelText(m.Labels), timeText(m.AddedAt), dash(m.AddedBy), shortKey(m.Key))
		}
		return t.flush()
	})
}

func machinesPending(e *env) error {
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		ps, err := c.PendingMachines(ctx)
		if err != nil || e.g.json {
			return jsonLines(e, ps, err)
		}
		if len(ps) == 0 {
			fmt.Fprintln(e.stderr, "no machine is waiting to be accepted")
			return nil
		}
		t := newTable(e.stdout, "ID", "IP", "ATTEMPTS", "LAST SEEN", "KEY", "REASON")
		for _, p := range ps {
			t.row(p.ID, dash(p.IP), fmt.Sprint(p.Attempts), timeText(p.LastSeen), shortKey(p.Key), dash(p.Reason))
		}
		if err := t.flush(); err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "accept one with: cc-bench machines accept %s\n", ps[0].ID)
		return nil
	})
}

func machinesAccept(e *env, id string) error {
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		m, err := c.AcceptMachine(ctx, id)
		const hint = "cc-bench machines pending"
		if fe := (*fleet.Error)(nil); errors.As(err, &fe) && fe.Code == fleet.CodeNotFound && !strings.Contains(fe.Description, hint) {
			return fmt.Errorf("%w\n  list the machines waiting with: %s", err, hint)
		}
		return e.done(m, err, "accepted %s; it may connect now", id)
	})
}

func machinesRemove(e *env, id string) error {
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		r, err := c.RemoveMachine(ctx, id)
		if err != nil || e.g.json {
			return e.done(r, err, "")
		}
		_, err = fmt.Fprintf(e.stdout, "removed %s (closed %d live connection%s)\n", id, r.Closed, plural(r.Closed))
		return err
	})
}

func machinesLabel(e *env, id string, set map[string]string, remove []string) error {
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		m, err := c.LabelMachine(ctx, id, set, remove)
		if err != nil || e.g.json || m == nil {
			return e.done(m, err, "labelled %s", id)
		}
		_, err = fmt.Fprintf(e.stdout, "%s: %s\n", id, labelText(m.Labels))
		return err
	})
}

func runMachinesAdd(e *env, args []string) error {
	// Here --key is the machine's public key, not the operator's key file
	// (give that with CC_KEY, or --key before the command).
	fs := e.flagSet("machines add", "key")
	var key string
	var labels listFlag
	fs.StringVar(&key, "key", "", "the machine's public nkey `PUBKEY` (U…, printed by cc-agent at first start)")
	fs.Var(&labels, "label", "a label `k=v` (repeatable)")
	h := machinesHelp
	h.usage = "cc-bench machines add ID --key PUBKEY [--label k=v]..."
	pos, err := e.parse(fs, args, h)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErrorf("usage: %s", h.usage)
	}
	if err := checkPublicKey("--key", key); err != nil {
		return err
	}
	set, err := keyValues("--label", labels)
	if err != nil {
		return err
	}
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		m, err := c.AddMachine(ctx, pos[0], key, set)
		return e.done(m, err, "added %s", pos[0])
	})
}

// checkPublicKey checks a public user nkey given on the command line.
func checkPublicKey(flagName, key string) error {
	switch {
	case key == "":
		return usageErrorf("%s PUBKEY is required: the public nkey (U…, 56 characters)", flagName)
	case strings.HasPrefix(key, "S"):
		return usageErrorf("%s wants a PUBLIC key (U…), not a seed: keep the seed secret", flagName)
	case !nkeys.IsValidPublicUserKey(key):
		return usageErrorf("%s %q is not a public user nkey (U… and 56 characters)", flagName, key)
	}
	return nil
}
