package cli

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

var serversHelp = help{
	usage: "cc-bench servers [--where SELECTOR] [--facts] [--all] [--json]",
	about: `List the machines that are ONLINE now, with when they came online, how
long they have been ONLINE (ONLINE FOR: not the host's uptime) and their
labels. --json prints one object per machine (machine, labels, since,
connections, facts).

--facts shows what each machine's agent reports about its host instead of
when it came online: platform and version (or OS), kernel, architecture,
CPUs, memory, virtualisation or container, HOST UPTIME (since the host
booted) and agent version.

--all also lists the registered machines that are OFFLINE, with since when
and why they left (as their broker said: Client Closed, Stale Connection,
…); "never" marks one not seen since it was registered. With --json an
OFFLINE machine is {"machine","labels","state":"OFFLINE","seen":{…}}.
cc-bench history shows every join and leave.

A SELECTOR is comma-separated terms that must all hold: key=value,
key!=value, key=glob*, key in (a,b) or key not in (a,b); " or " (or ";")
separates alternatives. A key is a label, one of machine, ip and hostname
(the machine id 10.0.0.5_web01 has ip 10.0.0.5 and hostname web01), or a
fact the agent reports: os, platform, platform_version, kernel, arch, cpus,
memory (bytes), virtualization, container, agent_version. machine, ip and
hostname win over a label of the same name, and a label over a fact.

Exit status: 0, also when no machine is ONLINE; 1 when a --where matches
no ONLINE machine (with --all: no registered one; in JSON mode too, the
reason on stderr) or on error; 2 for a usage error.`,
	examples: `cc-bench servers
cc-bench servers --where role=web,location=New-Brunswick
cc-bench servers --where 'hostname=db*' --json
cc-bench servers --facts --where 'os=linux,platform in (debian,ubuntu)'
cc-bench servers --where 'role=db or arch=arm64'
cc-bench servers --all --where role=db`,
}

// parseWhere parses a --where selector as a usage error when bad.
func parseWhere(s string) (bench.Selector, error) {
	sel, err := bench.ParseSelector(s)
	if err != nil {
		return sel, usageErrorf("--where: %v", err)
	}
	return sel, nil
}

// parseWhereOnly parses the flags of a command that takes no arguments
// and chooses machines with --where (servers, functions, version): the
// selector, or a usage error.
func (e *env) parseWhereOnly(fs *flagSet, args []string, h help, name string, where *string) (bench.Selector, error) {
	pos, err := e.parse(fs, args, h)
	if err != nil {
		return bench.Selector{}, err
	}
	if len(pos) > 0 {
		return bench.Selector{}, usageErrorf("%s takes no arguments, got %q; to choose machines use --where %s", name, pos[0], pos[0])
	}
	return parseWhere(*where)
}

func runServers(e *env, args []string) error {
	fs := e.flagSet("servers")
	where := fs.String("where", "", "choose machines by labels and facts, e.g. `role=web,env=prod`")
	all := fs.Bool("all", false, "also list the registered machines that are OFFLINE, with since when and why")
	facts := fs.Bool("facts", false, "show what each machine's agent reports about its host (platform, kernel, arch, CPUs, memory, host uptime, …)")
	sel, err := e.parseWhereOnly(fs, args, serversHelp, "servers", where)
	if err != nil {
		return err
	}
	c, err := e.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := e.requestCtx()
	defer cancel()
	servers, err := c.Servers(ctx, sel)
	if err != nil {
		return err
	}
	if *all && *facts {
		return usageErrorf("--facts and --all: choose one")
	}
	if *all {
		ms, err := c.Machines(ctx)
		if err != nil {
			return err
		}
		off := offlineOf(ms, servers, sel)
		if len(servers) == 0 && len(off) == 0 && !sel.Empty() {
			return &exitError{code: exitFailure, msg: fmt.Sprintf("no registered machine matches %s; see which are with: cc-bench machines ls", sel)}
		}
		return e.serversAll(servers, off)
	}
	if len(servers) == 0 && !sel.Empty() {
		// A selection that chose nobody fails, in JSON too: a script
		// acting on "every web server" must not take none for done.
		msg := fmt.Sprintf("no ONLINE machine matches %s", sel)
		if everyone, err := c.Servers(ctx, bench.Selector{}); err == nil {
			if hint := sel.KeyHint(everyone); hint != "" {
				msg += ": " + hint
			}
		}
		return &exitError{code: exitFailure, msg: msg + "; see which are with: cc-bench servers"}
	}
	if e.g.json {
		for _, s := range servers {
			if err := jsonLine(e.stdout, s); err != nil {
				return err
			}
		}
		return nil
	}
	if len(servers) == 0 {
		fmt.Fprintln(e.stderr, "no machine is ONLINE")
		return nil
	}
	if *facts {
		return e.serversFacts(servers)
	}
	t := newTable(e.stdout, "MACHINE", "SINCE", "ONLINE FOR", "LABELS")
	for _, s := range servers {
		t.row(s.Machine, timeText(s.Since), ageText(now().Sub(s.Since)), labelText(s.Labels))
	}
	return t.flush()
}

// serversFacts prints the ONLINE servers with their agents' facts.
func (e *env) serversFacts(servers []fleet.Server) error {
	t := newTable(e.stdout, "MACHINE", "ONLINE FOR", "PLATFORM", "KERNEL", "ARCH", "CPUS", "MEMORY", "VIRT", "HOST UPTIME", "AGENT", "LABELS")
	for _, s := range servers {
		f := s.Facts
		if f == nil {
			t.row(s.Machine, ageText(now().Sub(s.Since)), "-", "-", "-", "-", "-", "-", "-", "-", labelText(s.Labels))
			continue
		}
		platform := strings.TrimSpace(f.Platform + " " + f.PlatformVersion)
		if platform == "" {
			platform = f.OS
		}
		cpus, uptime := "-", "-"
		if f.CPUs > 0 {
			cpus = strconv.Itoa(f.CPUs)
		}
		if !f.BootTime.IsZero() {
			uptime = ageText(now().Sub(f.BootTime))
		}
		virt := f.Virtualization
		if f.Container != "" {
			virt = strings.TrimPrefix(virt+"/"+f.Container, "/")
		}
		t.row(s.Machine, ageText(now().Sub(s.Since)), dash(platform), dash(f.Kernel), dash(f.Arch), cpus, memText(f.MemoryBytes),
			dash(virt), uptime, dash(f.AgentVersion), labelText(s.Labels))
	}
	return t.flush()
}

// memText renders a memory size in binary units (bytesText); "-" for 0.
func memText(n uint64) string {
	if n == 0 {
		return "-"
	}
	return bytesText(float64(n))
}

// offline is a registered machine that is not ONLINE, as servers --all
// prints it in JSON.
type offline struct {
	Machine string            `json:"machine"`
	Labels  map[string]string `json:"labels,omitempty"`
	State   string            `json:"state"`
	Seen    *fleet.Seen       `json:"seen,omitempty"`
}

// offlineOf lists the machines of ms that sel selects and that are not
// among the ONLINE servers, longest offline first.
func offlineOf(ms []fleet.Machine, servers []fleet.Server, sel bench.Selector) []offline {
	on := map[string]bool{}
	for _, s := range servers {
		on[s.Machine] = true
	}
	var out []offline
	for _, m := range ms {
		if on[m.ID] || !sel.Match(m.ID, m.Labels) {
			continue
		}
		seen := m.Seen
		if seen != nil && seen.Online {
			// It left between the two answers.
			seen = &fleet.Seen{Since: seen.LastSeen, LastSeen: seen.LastSeen, Reason: seen.Reason}
		}
		out = append(out, offline{Machine: m.ID, Labels: m.Labels, State: "OFFLINE", Seen: seen})
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Seen, out[j].Seen
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case !a.Since.Equal(b.Since):
			return a.Since.Before(b.Since)
		}
		return out[i].Machine < out[j].Machine
	})
	return out
}

// serversAll prints the ONLINE servers, then the OFFLINE machines.
func (e *env) serversAll(servers []fleet.Server, off []offline) error {
	if e.g.json {
		for _, s := range servers {
			if err := jsonLine(e.stdout, s); err != nil {
				return err
			}
		}
		for _, o := range off {
			if err := jsonLine(e.stdout, o); err != nil {
				return err
			}
		}
		return nil
	}
	if len(servers) == 0 && len(off) == 0 {
		fmt.Fprintln(e.stderr, "no machine is registered")
		return nil
	}
	t := newTable(e.stdout, "MACHINE", "STATE", "SINCE", "FOR", "LABELS", "REASON")
	for _, s := range servers {
		t.row(s.Machine, "ONLINE", timeText(s.Since), ageText(now().Sub(s.Since)), labelText(s.Labels), "-")
	}
	for _, o := range off {
		if o.Seen == nil {
			t.row(o.Machine, "OFFLINE", "never", "-", labelText(o.Labels), "not seen since it was registered")
			continue
		}
		t.row(o.Machine, "OFFLINE", timeText(o.Seen.Since), ageText(now().Sub(o.Seen.Since)), labelText(o.Labels), dash(o.Seen.Reason))
	}
	return t.flush()
}
