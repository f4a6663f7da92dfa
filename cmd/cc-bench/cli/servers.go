package cli

import (
	"fmt"

	"github.com/commandcontrol/commandcontrol/bench"
)

var serversHelp = help{
	usage: "cc-bench servers [--where SELECTOR] [--json]",
	about: `List the machines that are ONLINE now, with when they came online and
their labels. --json prints one object per machine (machine, labels, since,
connections).

A SELECTOR is comma-separated terms that must all hold: key=value,
key!=value or key=glob*; a key is a label or one of the facts machine, ip
and hostname (the machine id 10.0.0.5_web01 has ip 10.0.0.5 and hostname
web01).`,
	examples: `cc-bench servers
cc-bench servers --where role=web,location=New-Brunswick
cc-bench servers --where 'hostname=db*' --json`,
}

// parseWhere parses a --where selector as a usage error when bad.
func parseWhere(s string) (bench.Selector, error) {
	sel, err := bench.ParseSelector(s)
	if err != nil {
		return sel, usageErrorf("--where: %v", err)
	}
	return sel, nil
}

func runServers(e *env, args []string) error {
	fs := e.flagSet("servers")
	where := fs.String("where", "", "choose machines by labels and facts, e.g. `role=web,env=prod`")
	pos, err := e.parse(fs, args, serversHelp)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("servers takes no arguments, got %q; to choose machines use --where %s", pos[0], pos[0])
	}
	sel, err := parseWhere(*where)
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
	if e.g.json {
		for _, s := range servers {
			if err := jsonLine(e.stdout, s); err != nil {
				return err
			}
		}
		return nil
	}
	if len(servers) == 0 {
		if sel.Empty() {
			fmt.Fprintln(e.stderr, "no machine is ONLINE")
		} else {
			_ = printf(e.stderr, "no ONLINE machine matches %s\n", sel)
		}
		return nil
	}
	t := newTable(e.stdout, "MACHINE", "SINCE", "UPTIME", "LABELS")
	for _, s := range servers {
		t.row(s.Machine, timeText(s.Since), ageText(now().Sub(s.Since)), labelText(s.Labels))
	}
	return t.flush()
}
