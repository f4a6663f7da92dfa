package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// Machines in bulk: ls, accept, rm and label take glob patterns of ids
// (web*, 10.0.0.?_db[0-9]) and --where selectors, and accept takes
// --all-pending. A change to more than one machine at once is listed
// and confirmed first (--yes confirms it ahead; without a terminal and
// without --yes it is refused, exit 2).

// confirmIn is where a bulk change reads its confirmation, and whether
// that is a terminal; tests replace it.
var confirmIn = func() (io.Reader, bool) { return os.Stdin, stdinIsTerminal() }

// isGlob reports whether arg is a pattern rather than a machine id (an
// id never holds * ? or [).
func isGlob(arg string) bool { return strings.ContainsAny(arg, "*?[") }

// selection is which machines a bulk command names: ids and patterns
// (any of them), and a selector (all its terms).
type selection struct {
	patterns []string
	where    bench.Selector
	whereSet bool
}

// parseSelection reads the ids and patterns args and --where.
func parseSelection(args []string, where string) (selection, error) {
	var s selection
	for _, a := range args {
		if _, err := path.Match(a, ""); err != nil {
			return s, usageErrorf("%q is not a valid pattern: %v (use * ? and [a-z])", a, err)
		}
		if !isGlob(a) {
			if err := fleet.ValidateMachineID(a); err != nil {
				return s, usageErrorf("%v", err)
			}
		}
		s.patterns = append(s.patterns, a)
	}
	if where != "" {
		sel, err := parseWhere(where)
		if err != nil {
			return s, err
		}
		s.where, s.whereSet = sel, true
	}
	return s, nil
}

// bulk reports whether s may name more than one machine.
func (s selection) bulk() bool {
	if s.whereSet || len(s.patterns) > 1 {
		return true
	}
	return len(s.patterns) == 1 && isGlob(s.patterns[0])
}

// match reports whether machine id with labels is selected.
func (s selection) match(id string, labels map[string]string) bool {
	if len(s.patterns) > 0 {
		hit := false
		for _, p := range s.patterns {
			if ok, _ := path.Match(p, id); ok {
				hit = true
				break
			}
		}
		if !hit {
			return false
		}
	}
	return s.where.Match(id, labels)
}

// matchPending reports whether the pending machine id, whose connection
// came from the address from, is selected: in --where, ip is from (the
// id is the stranger's word), see [bench.Selector.MatchPending].
func (s selection) matchPending(id, from string) bool {
	if len(s.patterns) > 0 && !slices.ContainsFunc(s.patterns, func(p string) bool {
		ok, _ := path.Match(p, id)
		return ok
	}) {
		return false
	}
	return s.where.MatchPending(id, from)
}

// idAddress is the IP address a machine id names before its first "_"
// (10.0.0.5 in 10.0.0.5_web01), if it names one.
func idAddress(id string) (netip.Addr, bool) {
	first, _, _ := strings.Cut(id, "_")
	a, err := netip.ParseAddr(first)
	return a.Unmap(), err == nil
}

// fromMismatch says how the address a pending machine connected from
// disagrees with the address its id names ("" when they agree, or the id
// names no address): the id is what the one connecting chose.
func fromMismatch(id, from string) string {
	claimed, ok := idAddress(id)
	if !ok {
		return ""
	}
	got, err := netip.ParseAddr(from)
	switch {
	case from == "":
		return fmt.Sprintf("its id says %s, and where it connected from is not recorded", claimed)
	case err != nil || got.Unmap() != claimed:
		return fmt.Sprintf("its id says %s, but it connected from %s", claimed, from)
	}
	return ""
}

// String says what s selects, for messages.
func (s selection) String() string {
	var parts []string
	if len(s.patterns) > 0 {
		parts = append(parts, strings.Join(s.patterns, " "))
	}
	if s.whereSet {
		parts = append(parts, "--where "+s.where.String())
	}
	return strings.Join(parts, " ")
}

// confirm asks the operator to confirm what, unless yes. Without a
// terminal to ask on it refuses (exit 2): a script must say --yes.
func (e *env) confirm(what string, yes bool) error {
	if yes {
		return nil
	}
	in, tty := confirmIn()
	if !tty {
		return usageErrorf("%s needs a confirmation, and there is no terminal to ask on: nothing was changed; add --yes to confirm it ahead", what)
	}
	fmt.Fprintf(e.stderr, "%s? [y/N] ", what)
	answer, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return errors.New("not confirmed: nothing was changed")
}

// bulkFlags are the flags of bulk accept.
type bulkFlags struct {
	allPending, yes, newestKey, ipMismatch bool
	site                                   string
}

// machinesAcceptBulk accepts every pending machine s selects (or all of
// them), each with the key it tried: an id tried with several keys is
// skipped unless newestKey, an id registered already is always skipped
// (and the service refuses to re-key it: NoReplace), and so is a key a
// remote site reported unless --site names that site, and an id naming
// an IP address other than the one its connection came from unless
// ipMismatch. A pending id is the word of whoever connected, so --where
// ip= tests the address the connection came from, and the listing
// confirmed shows it (FROM).
func machinesAcceptBulk(e *env, s selection, f bulkFlags) error {
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		ps, err := c.PendingMachines(ctx)
		if err != nil {
			return err
		}
		ms, err := c.Machines(ctx)
		if err != nil {
			return err
		}
		registered := map[string]bool{}
		for _, m := range ms {
			registered[m.ID] = true
		}
		type pick struct{ id, key, site, from, mismatch string }
		var picks []pick
		var skipped []string
		for _, p := range ps {
			keys := p.Keys
			if len(keys) == 0 {
				keys = []fleet.PendingKey{{Key: p.Key, IP: p.IP, Site: p.Site}}
			}
			k := keys[0] // the most recent
			if !f.allPending && !s.matchPending(p.ID, k.IP) {
				continue
			}
			mismatch := fromMismatch(p.ID, k.IP)
			switch {
			case registered[p.ID]:
				skipped = append(skipped, fmt.Sprintf("%s: registered already with another key; a bulk accept never replaces a key (check the host's key, then: cc-bench machines accept %s --pubkey KEY)", p.ID, p.ID))
				continue
			case (len(keys) > 1 || p.KeysDropped > 0) && !f.newestKey:
				skipped = append(skipped, fmt.Sprintf("%s: tried with %d different keys; check the host's key and accept it alone (cc-bench machines accept %s --pubkey KEY), or add --newest-key", p.ID, len(keys)+p.KeysDropped, p.ID))
				continue
			case k.Site != "" && k.Site != f.site:
				skipped = append(skipped, fmt.Sprintf("%s: its key was reported by site %s; accept it with --site %s", p.ID, k.Site, k.Site))
				continue
			case mismatch != "" && !f.ipMismatch:
				skipped = append(skipped, fmt.Sprintf("%s: %s; anyone may connect with any id: check the host, then accept it alone (cc-bench machines accept %s --pubkey KEY), or add --allow-ip-mismatch (NAT)", p.ID, mismatch, p.ID))
				continue
			}
			picks = append(picks, pick{p.ID, k.Key, k.Site, k.IP, mismatch})
		}
		for _, line := range skipped {
			_ = printf(e.stderr, "skipped %s\n", line)
		}
		if len(picks) == 0 {
			what := "no pending machine"
			if !f.allPending {
				what += " matching " + s.String()
			}
			return fmt.Errorf("%s can be accepted (list them with: cc-bench machines pending)", what)
		}
		t := newTable(e.stderr, "ID", "KEY", "SITE", "FROM")
		for _, p := range picks {
			from := dash(p.from)
			if a, ok := idAddress(p.id); ok && p.mismatch != "" {
				from += " (not " + a.String() + " as its id says)"
			}
			t.row(p.id, p.key, dash(p.site), from)
		}
		if err := t.flush(); err != nil {
			return err
		}
		what := fmt.Sprintf("accept these %d machines, each with the key shown", len(picks))
		if len(picks) == 1 {
			what = "accept this machine with the key shown"
		}
		if err := e.confirm(what, f.yes); err != nil {
			return err
		}
		failed := 0
		for _, p := range picks {
			m, err := c.AcceptNewMachineAt(ctx, p.id, p.key, p.site)
			if err != nil {
				failed++
				fmt.Fprintf(e.stderr, "%s: %v\n", p.id, err)
				continue
			}
			if e.g.json {
				if err := jsonLine(e.stdout, m); err != nil {
					return err
				}
				continue
			}
			if err := printf(e.stdout, "accepted %s%s with key %s\n", p.id, atSite(p.site), p.key); err != nil {
				return err
			}
		}
		return bulkOutcome("accepted", len(picks), failed)
	})
}

// bulkOutcome is a bulk change's result: an error when any failed.
func bulkOutcome(did string, n, failed int) error {
	if failed == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d machines not %s (see above)", failed, n, did)
}

// registeredMatching lists the registered machines s selects.
func registeredMatching(e *env, c *bench.Client, s selection) ([]fleet.Machine, error) {
	ctx, cancel := e.requestCtx()
	defer cancel()
	ms, err := c.Machines(ctx)
	if err != nil {
		return nil, err
	}
	var out []fleet.Machine
	for _, m := range ms {
		if s.match(m.ID, m.Labels) {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no registered machine matches %s (list them with: cc-bench machines ls)", s)
	}
	return out, nil
}

// machinesRemoveBulk removes every registered machine s selects, once
// confirmed.
func machinesRemoveBulk(e *env, s selection, yes bool) error {
	return e.withClient(func(c *bench.Client) error {
		ms, err := registeredMatching(e, c, s)
		if err != nil {
			return err
		}
		for _, m := range ms {
			fmt.Fprintln(e.stderr, m.ID)
		}
		what := fmt.Sprintf("remove these %d machines from the registry (their live connections are closed)", len(ms))
		if len(ms) == 1 {
			what = "remove this machine from the registry (its live connections are closed)"
		}
		if err := e.confirm(what, yes); err != nil {
			return err
		}
		ctx, cancel := e.requestCtx()
		defer cancel()
		failed := 0
		for _, m := range ms {
			r, err := c.RemoveMachine(ctx, m.ID)
			if err != nil {
				failed++
				fmt.Fprintf(e.stderr, "%s: %v\n", m.ID, err)
				continue
			}
			if err := e.done(r, nil, "removed %s (closed %d live connection%s)", m.ID, r.Closed, plural(r.Closed)); err != nil {
				return err
			}
		}
		return bulkOutcome("removed", len(ms), failed)
	})
}

// machinesLabelBulk labels every registered machine s selects.
func machinesLabelBulk(e *env, s selection, set map[string]string, remove []string) error {
	return e.withClient(func(c *bench.Client) error {
		ms, err := registeredMatching(e, c, s)
		if err != nil {
			return err
		}
		ctx, cancel := e.requestCtx()
		defer cancel()
		failed := 0
		for _, m := range ms {
			got, err := c.LabelMachine(ctx, m.ID, set, remove)
			if err != nil {
				failed++
				fmt.Fprintf(e.stderr, "%s: %v\n", m.ID, err)
				continue
			}
			var labels map[string]string
			if got != nil {
				labels = got.Labels
			}
			if err := e.done(got, nil, "%s: %s", m.ID, labelText(labels)); err != nil {
				return err
			}
		}
		return bulkOutcome("labelled", len(ms), failed)
	})
}
