package cli

import (
	"fmt"
	"strings"

	"github.com/commandcontrol/commandcontrol/bench"
)

var functionsHelp = help{
	usage: "cc-bench functions [--where SELECTOR] [--json]",
	about: `List every function the ONLINE machines --where selects serve: the
built-ins and the operators' own (cc-agent --functions-dir), with their
arguments (name:type, "required" when it must be given), whether they only
read (read-only) or may change the machine (changes), and how many of the
selected machines serve each ("2 of 3": not all of them).

The agents are asked by nats micro discovery, which only an admin may
send: each selected machine is asked directly, and answers under a reply
subject only it may publish on, so each answer is that machine's (one
naming another machine is ignored and reported). What a machine answers
is still its own word about itself. An agent that says only its
functions' names shows "?" for their role and arguments; one older than
this per-machine asking does not answer (nats micro info cc-agent still
shows what it says of itself, unattributed).
A function the machines describe differently is marked "(differs)"; the
row shows what most of them say. Machines that did not answer in time
are listed on stderr and the exit code is 1.

--json prints one object per function: name, read_only, help, args,
described, differs, machines.`,
	examples: `cc-bench functions
cc-bench functions --where os=linux,role=web
cc-bench functions --json`,
}

func runFunctions(e *env, args []string) error {
	fs := e.flagSet("functions")
	where := fs.String("where", "", "ask the ONLINE machines matching this `selector`, e.g. role=web")
	sel, err := e.parseWhereOnly(fs, args, functionsHelp, "functions", where)
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
	cat, err := c.Functions(ctx, sel)
	if err != nil {
		return err
	}
	answered := cat.Asked - len(cat.NoAnswer)
	if e.g.json {
		for _, f := range cat.Functions {
			if err := jsonLine(e.stdout, f); err != nil {
				return err
			}
		}
	} else if cat.Asked > 0 {
		t := newTable(e.stdout, "FUNCTION", "ROLE", "MACHINES", "ARGUMENTS")
		for _, f := range cat.Functions {
			n := fmt.Sprint(len(f.Machines))
			if len(f.Machines) < answered {
				n += fmt.Sprintf(" of %d", answered)
			}
			t.row(f.Name, roleText(f), n, argsText(f))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	switch {
	case cat.Asked == 0 && sel.Empty():
		fmt.Fprintln(e.stderr, "no machine is ONLINE")
	case cat.Asked == 0:
		_ = printf(e.stderr, "no ONLINE machine matches %s\n", sel)
	}
	for _, m := range cat.Malformed {
		_ = printf(e.stderr, "ignored the answer of %s\n", m)
	}
	if len(cat.NoAnswer) > 0 {
		_ = printf(e.stderr, "%d of %d machine%s did not answer in %s: %s\n", len(cat.NoAnswer), cat.Asked, plural(cat.Asked),
			e.g.timeout, machineList(cat.NoAnswer))
		return &exitError{code: exitFailure}
	}
	return nil
}

// roleText says whether f only reads.
func roleText(f bench.Function) string {
	switch {
	case !f.Described:
		return "?"
	case f.ReadOnly:
		return "read-only"
	}
	return "changes"
}

// argsText lists f's arguments as name:type, "required" marked.
func argsText(f bench.Function) string {
	if !f.Described {
		return "?"
	}
	var parts []string
	for _, a := range f.Args {
		s := a.Name + ":" + a.Type
		if a.Required {
			s += " (required)"
		}
		parts = append(parts, s)
	}
	out := strings.Join(parts, ", ")
	if out == "" {
		out = "-"
	}
	if f.Differs {
		out += " (differs)"
	}
	return out
}
