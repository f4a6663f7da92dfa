package cli

import (
	"fmt"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

var operatorsHelp = help{
	usage: "cc-bench operators ls | add NAME --pubkey KEY --role admin|viewer [--sessions] | rm NAME",
	about: `Manage the operators: the people and scripts allowed to use the workbench,
each with an nkey and a role. An admin may call every function and manage the
registry and the operators; a viewer may call read-only functions and list.
Sessions (browsers, apps, devices) are for admins, and for a viewer added
with --sessions, who may then list, watch and call them (ROLE shows
viewer+sessions).

  ls   list the operators
  add  register an operator with its public nkey (U…): create one with
       nk -gen user, or the nats CLI
  rm   remove an operator; its live connections are closed

--key stays the global flag for your own seed file; the new operator's
public key is given with --pubkey.`,
	examples: `cc-bench operators ls
cc-bench operators add alice --pubkey UABC... --role viewer
cc-bench operators add noc --pubkey UDEF... --role viewer --sessions
cc-bench operators rm alice`,
}

func runOperators(e *env, args []string) error {
	fs := e.flagSet("operators")
	var pubkey, role string
	fs.StringVar(&pubkey, "pubkey", "", "for add: the operator's public nkey `KEY` (U…)")
	fs.StringVar(&role, "role", "", "for add: `admin` or viewer")
	sessions := fs.Bool("sessions", false, "for add: let a viewer list, watch and call sessions (an admin always may)")
	pos, err := e.parse(fs, args, operatorsHelp)
	if err != nil {
		return err
	}
	if err := notAPublicKey(e.g.key); err != nil {
		return err
	}
	if len(pos) == 0 {
		return usageErrorf("operators needs a subcommand: ls, add or rm (see cc-bench operators --help)")
	}
	sub, pos := pos[0], pos[1:]
	switch sub {
	case "ls", "list":
		return needArgs(sub, pos, 0, "", func() error { return operatorsList(e) })
	case "add":
		return operatorsAdd(e, pos, pubkey, role, *sessions)
	case "rm", "remove":
		return needArgs(sub, pos, 1, "NAME", func() error {
			return e.withClient(func(c *bench.Client) error {
				ctx, cancel := e.requestCtx()
				defer cancel()
				r, err := c.RemoveOperator(ctx, pos[0])
				if err != nil || e.g.json {
					return e.done(r, err, "")
				}
				return e.done(r, nil, "removed operator %s (closed %d live connection%s)", pos[0], r.Closed, plural(r.Closed))
			})
		})
	}
	return usageErrorf("unknown operators subcommand %q; want ls, add or rm", sub)
}

func operatorsList(e *env) error {
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		ops, err := c.Operators(ctx)
		if err != nil || e.g.json {
			return jsonLines(e, ops, err)
		}
		t := newTable(e.stdout, "NAME", "ROLE", "ADDED", "KEY")
		for _, o := range ops {
			role := o.Role
			if o.Sessions && o.Role != fleet.RoleAdmin {
				role += "+sessions"
			}
			t.row(o.Name, role, timeText(o.AddedAt), o.Key)
		}
		return t.flush()
	})
}

func operatorsAdd(e *env, pos []string, key, role string, sessions bool) error {
	const usage = "cc-bench operators add NAME --pubkey KEY --role admin|viewer [--sessions]"
	if len(pos) != 1 {
		return usageErrorf("usage: %s", usage)
	}
	if err := fleet.ValidateName("operator name", pos[0]); err != nil {
		return usageErrorf("%v", err)
	}
	if err := checkPublicKey("--pubkey", key); err != nil {
		return err
	}
	if !fleet.ValidRole(role) {
		return usageErrorf("--role %q: want %s or %s", role, fleet.RoleAdmin, fleet.RoleViewer)
	}
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		if !sessions {
			o, err := c.AddOperator(ctx, pos[0], key, role)
			return e.done(o, err, "added operator %s (%s)", pos[0], role)
		}
		o, err := c.AddOperatorWith(ctx, fleet.OperatorRequest{Name: pos[0], Key: key, Role: role, Sessions: true})
		if err == nil && o != nil && !o.Sessions && o.Role != fleet.RoleAdmin {
			return fmt.Errorf("operator %s was added without the sessions permission: is cc-control up to date? "+
				"Remove it (cc-bench operators rm %s) and add it again once it is", pos[0], pos[0])
		}
		return e.done(o, err, "added operator %s (%s, may list, watch and call sessions)", pos[0], role)
	})
}

var whoamiHelp = help{
	usage:    "cc-bench whoami [--json]",
	about:    "Show the operator name and role the control service knows this key by.",
	examples: "CC_KEY=./cc-data/admin.nk cc-bench whoami",
}

func runWhoAmI(e *env, args []string) error {
	pos, err := e.parse(e.flagSet("whoami"), args, whoamiHelp)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("whoami takes no arguments, got %q", pos)
	}
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		w, err := c.WhoAmI(ctx)
		if err != nil || e.g.json {
			return e.done(w, err, "")
		}
		return printf(e.stdout, "%s (%s)\nkey %s\nbroker %s\n", w.Operator, w.Role, c.Key(), e.g.server)
	})
}
