package cli

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

var machinesHelp = help{
	usage: `cc-bench machines ls [ID|GLOB]... [--where SEL] | pending |
                         accept ID [--pubkey KEY] [--site S] |
                         accept GLOB... | --where SEL | --all-pending [--yes] [--newest-key]
                                [--allow-ip-mismatch] [--site S] |
                         add ID --pubkey KEY [--label k=v]... [--site S] [--replace] |
                         rm ID|GLOB... [--where SEL] [--yes] |
                         label ID|GLOB k=v... [--rm-label k]... (or --where SEL k=v...) |
                         reject ID... | deny [--id] ID|KEY... | deny ls | undeny ID|KEY...`,
	about: `Manage the registry of machines allowed to join (admins; viewers may ls,
pending and deny ls).

  ls       every registered machine, ONLINE or OFFLINE and since when, when
           it was last seen (the control service remembers it across its
           restarts; "never" for a machine not seen since it was
           registered), with its labels. --json gives the seen object
           (online, since, last_seen, reason: why it last left)
  pending  machines that tried to connect but are not registered, with every
           key that tried each id; an id tried with more than one key is
           flagged: anyone may try any id, so check the key on the host
  accept   register a pending machine with the key it presented; --pubkey
           names the key you checked on the host (cc-agent --print-key), in
           full or a unique prefix, and is required when the id was tried
           with more than one key. A key a remote site reported (SITE in
           pending) is accepted at that site only, and only with --site
           naming it: a site may report any id, even one you meant for
           the hub
  add      register a machine with its public nkey (U…) and labels; with
           --replace, give a registered machine another key
  rm       unregister a machine; its live connections are closed now
  label    set labels (k=v) and remove some (--rm-label k)
  reject   drop a pending machine (it is pending again if it retries)
  deny     refuse a machine id, or a public key (U…), for good: the
           broker refuses it at once and it is never pending again (like
           salt-key -d); pending entries it makes moot are dropped. A
           registered machine is removed (rm) before it can be denied.
           An argument that is a public key is a key (--id: an id even
           so). deny ls lists the deny list; undeny takes an entry off it

In bulk: ls, accept, rm and label take glob patterns of ids (web*,
10.0.0.?_db[0-9]; quote them from the shell) and --where SEL (labels and
the facts machine, ip, hostname, as for call); accept --all-pending takes
every pending machine. A pending id is whatever the one connecting
chose, so for pending machines --where ip= tests the address the
connection came from (FROM), not the id. A bulk accept binds the key
each id was tried with; it skips an id registered already (it never
replaces a key), an id tried with several keys (unless --newest-key: the
most recent one, which may be an attacker's retry), a key a site
reported unless --site names that site, and an id that names an IP
address other than the one it connected from (unless
--allow-ip-mismatch, e.g. behind NAT). A bulk accept or rm lists what it
will change, with the address each connected from, and asks first:
--yes confirms ahead, and without a terminal and without --yes it
changes nothing (exit 2).

--site S (accept, add) places the machine at remote site S: it connects to
that site's broker, which admits only its own site's machines, and the hub
believes only that site about it. Without --site a new machine belongs to
the hub; accept keeps a registered machine's site (but refuses a key a site
reported: name that site with --site), add --replace without --site moves
it to the hub.

Replacing a machine's key (accept or add --replace) closes every live
connection made with the old key. --key stays the global flag for your own
seed file; public keys are given with --pubkey.`,
	examples: `cc-bench machines pending
cc-bench machines accept 10.0.0.5_web01
cc-bench machines accept 10.0.0.5_web01 --pubkey UDVEU3DD4K
cc-bench machines accept '10.0.0.*' --yes
cc-bench machines accept --all-pending
cc-bench machines add 10.0.0.6_web02 --pubkey UABC... --label role=web --label location=New-Jersey
cc-bench machines accept 10.3.2.7_dc2-web --site dc2
cc-bench machines label 10.0.0.6_web02 env=prod --rm-label staging
cc-bench machines label --where role=web env=prod
cc-bench machines ls '*_web*' --where env=prod
cc-bench machines rm '10.0.9.*' --yes
cc-bench machines reject 10.0.0.66_unknown
cc-bench machines deny 10.0.0.66_unknown
cc-bench machines deny ls`,
}

func runMachines(e *env, args []string) error {
	fs := e.flagSet("machines")
	var rmLabels, labels listFlag
	var pubkey, site, where string
	var replace, allPending, yes, newestKey, ipMismatch, asID bool
	fs.Var(&rmLabels, "rm-label", "a label `key` to remove, for label (repeatable)")
	fs.Var(&labels, "label", "a label `k=v` for add (repeatable)")
	fs.StringVar(&pubkey, "pubkey", "", "the machine's public nkey `KEY` (U…; cc-agent --print-key shows it): in full for add, in full or a unique prefix for accept")
	fs.StringVar(&site, "site", "", "for accept and add: the remote `SITE` whose broker the machine connects to (as in the hub's leaf sites; default: the hub)")
	fs.BoolVar(&replace, "replace", false, "for add: replace the key and labels of a registered machine (its live connections are closed)")
	fs.StringVar(&where, "where", "", "for ls, accept, rm and label: the machines matching this `selector`, e.g. role=web,hostname=web*")
	fs.BoolVar(&allPending, "all-pending", false, "for accept: every pending machine, each with the key it tried")
	fs.BoolVar(&yes, "yes", false, "for a bulk accept or rm: change without asking (required without a terminal)")
	fs.BoolVar(&newestKey, "newest-key", false, "for a bulk accept: accept an id tried with several keys with the most recent one (default: skip it); the most recent may be an attacker's retry")
	fs.BoolVar(&ipMismatch, "allow-ip-mismatch", false, "for a bulk accept: accept an id naming an IP address other than the one it connected from, e.g. behind NAT (default: skip it)")
	fs.BoolVar(&asID, "id", false, "for deny and undeny: the arguments are machine ids, even one that reads as a key")
	pos, err := e.parse(fs, args, machinesHelp)
	if err != nil {
		return err
	}
	if err := notAPublicKey(e.g.key); err != nil {
		return err
	}
	if len(pos) == 0 {
		return usageErrorf("machines needs a subcommand: ls, pending, accept, add, rm, label, reject, deny or undeny (see cc-bench machines --help)")
	}
	sub, pos := pos[0], pos[1:]
	if sub != "accept" && (allPending || newestKey || ipMismatch) {
		return usageErrorf("--all-pending, --newest-key and --allow-ip-mismatch are for accept")
	}
	if where != "" && !slices.Contains([]string{"ls", "list", "accept", "rm", "remove", "label"}, sub) {
		return usageErrorf("--where is for ls, accept, rm and label")
	}
	if sub == "add" && len(pos) > 0 {
		if err := fleet.ValidateMachineID(pos[0]); err != nil {
			return usageErrorf("machines %s: %v", sub, err)
		}
	}
	switch sub {
	case "ls", "list":
		s, err := parseSelection(pos, where)
		if err != nil {
			return err
		}
		return machinesList(e, s)
	case "pending":
		return needArgs(sub, pos, 0, "", func() error { return machinesPending(e) })
	case "accept":
		s, err := parseSelection(pos, where)
		if err != nil {
			return err
		}
		if site != "" {
			if err := fleet.ValidateSiteName(site); err != nil {
				return usageErrorf("--site: %v", err)
			}
		}
		switch {
		case allPending && (len(pos) > 0 || where != ""):
			return usageErrorf("--all-pending takes every pending machine: give no ids, patterns or --where with it")
		case allPending || s.bulk():
			if pubkey != "" {
				return usageErrorf("--pubkey names one machine's key: accept that machine alone (a bulk accept binds the key each id was tried with)")
			}
			return machinesAcceptBulk(e, s, bulkFlags{allPending: allPending, yes: yes, newestKey: newestKey, ipMismatch: ipMismatch, site: site})
		}
		return needArgs(sub, pos, 1, "ID (or patterns, --where or --all-pending)", func() error { return machinesAccept(e, pos[0], pubkey, site) })
	case "add":
		if len(pos) != 1 {
			return usageErrorf("usage: cc-bench machines add ID --pubkey KEY [--label k=v]... [--site S] [--replace]")
		}
		return machinesAdd(e, pos[0], pubkey, site, labels, replace)
	case "rm", "remove":
		s, err := parseSelection(pos, where)
		if err != nil {
			return err
		}
		if s.bulk() {
			return machinesRemoveBulk(e, s, yes)
		}
		return needArgs(sub, pos, 1, "ID (or patterns or --where)", func() error { return machinesRemove(e, pos[0]) })
	case "label":
		var target []string
		if where == "" {
			if len(pos) == 0 {
				return usageErrorf("usage: cc-bench machines label ID|GLOB k=v... [--rm-label k]... (or --where SEL k=v...)")
			}
			target, pos = pos[:1], pos[1:]
		}
		if len(pos) == 0 && len(rmLabels) == 0 {
			return usageErrorf("usage: cc-bench machines label ID|GLOB k=v... [--rm-label k]... (or --where SEL k=v...)")
		}
		set, err := keyValues("label", pos)
		if err != nil {
			return err
		}
		s, err := parseSelection(target, where)
		if err != nil {
			return err
		}
		if s.bulk() {
			return machinesLabelBulk(e, s, set, rmLabels)
		}
		return machinesLabel(e, target[0], set, rmLabels)
	case "reject":
		if len(pos) == 0 {
			return usageErrorf("reject needs the pending machine ID(s) to drop")
		}
		return machinesReject(e, pos)
	case "deny":
		if len(pos) == 1 && pos[0] == "ls" && !asID {
			return machinesDenyList(e)
		}
		if len(pos) == 0 {
			return usageErrorf("deny needs machine ids or public keys (U…) to deny, or ls to list the deny list")
		}
		return machinesDeny(e, pos, asID)
	case "undeny":
		if len(pos) == 0 {
			return usageErrorf("undeny needs machine ids or public keys (U…) to take off the deny list")
		}
		return machinesUndeny(e, pos, asID)
	}
	return usageErrorf("unknown machines subcommand %q; want ls, pending, accept, add, rm, label, reject, deny or undeny", sub)
}

// notAPublicKey refuses a public key given as --key, the caller's own seed
// file (the commands that register keys took --key before --pubkey).
func notAPublicKey(keyFile string) error {
	if nkeys.IsValidPublicUserKey(keyFile) {
		return usageErrorf("--key is your own nkey seed FILE; give the public key to register with --pubkey %s", keyFile)
	}
	return nil
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

func machinesList(e *env, s selection) error {
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		all, err := c.Machines(ctx)
		var ms []fleet.Machine
		for _, m := range all {
			if s.match(m.ID, m.Labels) {
				ms = append(ms, m)
			}
		}
		if err != nil || e.g.json {
			return jsonLines(e, ms, err)
		}
		if len(ms) == 0 && len(all) > 0 {
			fmt.Fprintf(e.stderr, "no registered machine matches %s\n", s)
			return nil
		}
		t := newTable(e.stdout, "ID", "STATE", "SINCE", "LAST SEEN", "SITE", "LABELS", "ADDED", "BY", "KEY")
		for _, m := range ms {
			state, since, last := seenText(m)
			t.row(m.ID, state, since, last, dash(m.Site), labelText(m.Labels), timeText(m.AddedAt), dash(m.AddedBy), shortKey(m.Key))
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
		// One row per key that tried an id: the key is what the operator
		// compares with the host's own (cc-agent --print-key).
		t := newTable(e.stdout, "ID", "KEYS", "KEY", "ATTEMPTS", "LAST SEEN", "SITE", "IP", "REASON")
		var flagged []fleet.Pending
		fromSite := false
		for _, p := range ps {
			keys := p.Keys
			if len(keys) == 0 {
				keys = []fleet.PendingKey{{Key: p.Key, IP: p.IP, LastSeen: p.LastSeen, Attempts: p.Attempts, Reason: p.Reason, Site: p.Site}}
			}
			n := fmt.Sprint(len(keys) + p.KeysDropped)
			if p.MultipleKeys {
				n += " !"
				flagged = append(flagged, p)
			}
			for i, k := range keys {
				id := p.ID
				if i > 0 {
					id, n = `"`, ""
				}
				fromSite = fromSite || k.Site != ""
				t.row(id, n, k.Key, fmt.Sprint(k.Attempts), timeText(k.LastSeen), dash(k.Site), dash(k.IP), dash(k.Reason))
			}
		}
		if err := t.flush(); err != nil {
			return err
		}
		for _, p := range flagged {
			_ = printf(e.stderr, "WARNING: %s was tried with %d different keys: someone other than the machine may be asking.\n"+
				"  Check the key on the host (cc-agent --print-key) and accept that one with: cc-bench machines accept %s --pubkey KEY\n",
				p.ID, len(p.Keys)+p.KeysDropped, p.ID)
		}
		if fromSite {
			fmt.Fprintln(e.stderr, "SITE names the remote site whose broker reported the attempt (- the hub's): its IP is that site's word, "+
				"and a key a site reported is accepted at that site only, with: cc-bench machines accept ID --site SITE")
		}
		if len(flagged) < len(ps) {
			fmt.Fprintln(e.stderr, "check a machine's key on the host (cc-agent --print-key), then accept it with: cc-bench machines accept ID --pubkey KEY")
		}
		return nil
	})
}

func machinesAccept(e *env, id, pubkey, site string) error {
	if site != "" {
		if err := fleet.ValidateSiteName(site); err != nil {
			return usageErrorf("--site: %v", err)
		}
	}
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		m, err := c.AcceptMachineAt(ctx, id, pubkey, site)
		const hint = "cc-bench machines pending"
		if fe := (*fleet.Error)(nil); errors.As(err, &fe) && fe.Code == fleet.CodeNotFound && !strings.Contains(fe.Description, hint) {
			return fmt.Errorf("%w\n  list the machines waiting with: %s", err, hint)
		}
		if err != nil || e.g.json || m == nil {
			return e.done(m, err, "accepted %s%s; it may connect now", id, atSite(site))
		}
		return e.done(m, nil, "accepted %s%s with key %s; it may connect now%s", id, atSite(m.Site), m.Key, replacedText(m))
	})
}

func machinesAdd(e *env, id, pubkey, site string, labels []string, replace bool) error {
	if err := checkPublicKey("--pubkey", pubkey); err != nil {
		return err
	}
	if site != "" {
		if err := fleet.ValidateSiteName(site); err != nil {
			return usageErrorf("--site: %v", err)
		}
		set, err := keyValues("--label", labels)
		if err != nil {
			return err
		}
		return e.withClient(func(c *bench.Client) error {
			ctx, cancel := e.requestCtx()
			defer cancel()
			m, err := c.AddMachineAt(ctx, id, pubkey, site, set, replace)
			if err != nil || e.g.json || m == nil {
				return e.done(m, err, "added %s at site %s", id, site)
			}
			return e.done(m, nil, "added %s at site %s with key %s%s", id, site, m.Key, replacedText(m))
		})
	}
	set, err := keyValues("--label", labels)
	if err != nil {
		return err
	}
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		if !replace {
			m, err := c.AddMachine(ctx, id, pubkey, set)
			return e.done(m, err, "added %s", id)
		}
		m, err := c.ReplaceMachine(ctx, id, pubkey, set)
		if err != nil || e.g.json || m == nil {
			return e.done(m, err, "added %s", id)
		}
		return e.done(m, nil, "added %s with key %s%s", id, m.Key, replacedText(m))
	})
}

// atSite is " at site S", or "" for the hub.
func atSite(site string) string {
	if site == "" {
		return ""
	}
	return " at site " + site
}

// replacedText says that a change replaced a machine's key, and what
// became of the old key's connections.
func replacedText(m *fleet.MachineChange) lines {
	if m.ReplacedKey == "" {
		return ""
	}
	return lines(fmt.Sprintf("\nreplaced its key %s: closed %d live connection%s made with the old key", m.ReplacedKey, m.Closed, plural(m.Closed)))
}

func machinesRemove(e *env, id string) error {
	return e.withClient(func(c *bench.Client) error {
		ctx, cancel := e.requestCtx()
		defer cancel()
		r, err := c.RemoveMachine(ctx, id)
		if err != nil || e.g.json {
			return e.done(r, err, "")
		}
		return printf(e.stdout, "removed %s (closed %d live connection%s)\n", id, r.Closed, plural(r.Closed))
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
		return printf(e.stdout, "%s: %s\n", id, labelText(m.Labels))
	})
}

// checkPublicKey checks a public user nkey given on the command line.
func checkPublicKey(flagName, key string) error {
	switch {
	case key == "":
		return usageErrorf("%s KEY is required: the public nkey (U…, 56 characters)", flagName)
	case strings.HasPrefix(key, "S"):
		return usageErrorf("%s wants a PUBLIC key (U…), not a seed: keep the seed secret", flagName)
	case !nkeys.IsValidPublicUserKey(key):
		return usageErrorf("%s %q is not a public user nkey (U… and 56 characters)", flagName, key)
	}
	return nil
}

// seenText renders a machine's state, since when, and when it was last
// seen, for machines ls.
func seenText(m fleet.Machine) (state, since, last string) {
	switch {
	case m.Online:
		state, since, last = "ONLINE", "-", "now"
		if m.Seen != nil {
			since = timeText(m.Seen.Since)
		}
	case m.Seen == nil:
		state, since, last = "OFFLINE", "-", "never"
	default:
		state, since, last = "OFFLINE", timeText(m.Seen.Since), timeText(m.Seen.LastSeen)
	}
	return state, since, last
}
