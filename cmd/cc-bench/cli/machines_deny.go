package cli

import (
	"fmt"

	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// machines reject, deny, undeny and deny ls: like salt-key -r and -d.

// denyTarget reads a deny or undeny argument: a public key (U…) is a
// key, anything else a machine id (asID: an id whatever it reads as).
func denyTarget(arg string, asID bool) (id, key string, err error) {
	if !asID && nkeys.IsValidPublicUserKey(arg) {
		return "", arg, nil
	}
	if err := fleet.ValidateMachineID(arg); err != nil {
		return "", "", usageErrorf("%v (a key to deny is a public nkey, U… and 56 characters)", err)
	}
	return arg, "", nil
}

func machinesReject(e *env, ids []string) error {
	for _, id := range ids {
		if err := fleet.ValidateMachineID(id); err != nil {
			return usageErrorf("%v", err)
		}
	}
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		for _, id := range ids {
			if err := c.RejectMachine(ctx, id); err != nil {
				return err
			}
			if err := e.done(fleet.RemoveResult{ID: id}, nil, "rejected %s: dropped from pending (it is pending again at its next attempt; to refuse it for good: cc-bench machines deny %s)", id, id); err != nil {
				return err
			}
		}
		return nil
	})
}

func machinesDeny(e *env, args []string, asID bool) error {
	type target struct{ id, key string }
	var ts []target
	for _, a := range args {
		id, key, err := denyTarget(a, asID)
		if err != nil {
			return err
		}
		ts = append(ts, target{id, key})
	}
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		for _, t := range ts {
			r, err := c.Deny(ctx, t.id, t.key)
			if err != nil || e.g.json {
				if err := e.done(r, err, ""); err != nil {
					return err
				}
				continue
			}
			dropped := ""
			if n := len(r.DroppedPending); n > 0 {
				entries := "entries"
				if n == 1 {
					entries = "entry"
				}
				dropped = fmt.Sprintf("; dropped %d pending %s: %s", n, entries, joinIDs(r.DroppedPending))
			}
			if err := printf(e.stdout, "denied %s: its connections are refused and never pending%s\n", denyName(r.Denied), dropped); err != nil {
				return err
			}
		}
		return nil
	})
}

func machinesUndeny(e *env, args []string, asID bool) error {
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		for _, a := range args {
			id, key, err := denyTarget(a, asID)
			if err != nil {
				return err
			}
			d, err := c.Undeny(ctx, id, key)
			if err := e.done(d, err, "undenied %s", denyName(fleet.Denied{ID: id, Key: key})); err != nil {
				return err
			}
		}
		return nil
	})
}

func machinesDenyList(e *env) error {
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		ds, err := c.DenyList(ctx)
		if err != nil || e.g.json {
			return jsonLines(e, ds, err)
		}
		if len(ds) == 0 {
			fmt.Fprintln(e.stderr, "the deny list is empty")
			return nil
		}
		t := newTable(e.stdout, "ID", "KEY", "ADDED", "BY")
		for _, d := range ds {
			t.row(dash(d.ID), dash(d.Key), timeText(d.AddedAt), dash(d.AddedBy))
		}
		return t.flush()
	})
}

func denyName(d fleet.Denied) string {
	if d.Key != "" {
		return "key " + d.Key
	}
	return "machine id " + d.ID
}

func joinIDs(ids []string) string {
	if len(ids) > 5 {
		return fmt.Sprintf("%s and %d more", joinIDs(ids[:5]), len(ids)-5)
	}
	out := ""
	for i, id := range ids {
		if i > 0 {
			out += ", "
		}
		out += id
	}
	return out
}
