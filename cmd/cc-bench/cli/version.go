package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/internal/version"
)

var versionHelp = help{
	usage: "cc-bench version [--where SELECTOR] [--json]",
	about: `Show which builds run: this cc-bench, the control service (the replica
that answers: with several, one of them), and the agents of the ONLINE
machines --where selects, grouped by version with how many run each and
which (the first few). An agent that reported no version in its facts
(an older one) shows as "unknown".

--json prints one object per line: {"component":"cc-bench",…},
{"component":"cc-control","version","commit","go","replica","started"},
then {"component":"cc-agent","version","count","machines"} per version.

cc-bench --version prints this binary's version alone, without connecting.`,
	examples: `cc-bench version
cc-bench version --where role=web
cc-bench version --json`,
}

// maxListed is how many machines a row names before "… and N more".
const maxListed = 5

// versionLine is one line of cc-bench version --json.
type versionLine struct {
	Component string     `json:"component"`
	Version   string     `json:"version"`
	Commit    string     `json:"commit,omitempty"`
	Modified  bool       `json:"modified,omitempty"`
	Go        string     `json:"go,omitempty"`
	Replica   string     `json:"replica,omitempty"`
	Started   *time.Time `json:"started,omitempty"`
	Count     int        `json:"count,omitempty"`
	Machines  []string   `json:"machines,omitempty"`
	Error     string     `json:"error,omitempty"`
}

func runVersion(e *env, args []string) error {
	fs := e.flagSet("version")
	where := fs.String("where", "", "only the agents of the ONLINE machines matching this `selector`, e.g. role=web")
	sel, err := e.parseWhereOnly(fs, args, versionHelp, "version", where)
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
	agents, err := c.AgentVersions(ctx, sel)
	if err != nil {
		return err
	}
	cv, cerr := c.ControlVersion(ctx)

	self := version.Get()
	lines := []versionLine{{Component: "cc-bench", Version: self.Version, Commit: self.Commit, Modified: self.Modified, Go: self.Go}}
	if cerr != nil {
		lines = append(lines, versionLine{Component: "cc-control", Version: bench.UnknownVersion, Error: cerr.Error()})
	} else {
		lines = append(lines, versionLine{Component: "cc-control", Version: cv.Version, Commit: cv.Commit, Modified: cv.Modified,
			Go: cv.Go, Replica: cv.Replica, Started: &cv.Started})
	}
	for _, a := range agents {
		lines = append(lines, versionLine{Component: "cc-agent", Version: a.Version, Count: len(a.Machines), Machines: a.Machines})
	}
	if e.g.json {
		for _, l := range lines {
			if err := jsonLine(e.stdout, l); err != nil {
				return err
			}
		}
	} else {
		t := newTable(e.stdout, "COMPONENT", "VERSION", "COUNT", "WHERE")
		t.row("cc-bench", versionText(self), "1", "this workbench, "+self.Go)
		if cerr != nil {
			t.row("cc-control", bench.UnknownVersion, "-", "did not answer: "+cerr.Error())
		} else {
			v := version.Info{Version: cv.Version, Commit: cv.Commit, Modified: cv.Modified}
			t.row("cc-control", versionText(v), "1", fmt.Sprintf("replica %s, up since %s, %s", dash(cv.Replica), timeText(cv.Started), cv.Go))
		}
		for _, a := range agents {
			t.row("cc-agent", a.Version, fmt.Sprint(len(a.Machines)), machineList(a.Machines))
		}
		if err := t.flush(); err != nil {
			return err
		}
		if len(agents) == 0 {
			if sel.Empty() {
				fmt.Fprintln(e.stderr, "no machine is ONLINE")
			} else {
				_ = printf(e.stderr, "no ONLINE machine matches %s\n", sel)
			}
		}
	}
	if cerr != nil {
		return &exitError{code: exitFailure, msg: "the control service did not say its version: " + cerr.Error()}
	}
	return nil
}

// versionText is a build's version with its short commit.
func versionText(v version.Info) string { return v.String() }

// machineList names the first machines, then how many more there are.
func machineList(ms []string) string {
	if len(ms) <= maxListed {
		return strings.Join(ms, ", ")
	}
	return fmt.Sprintf("%s, … and %d more", strings.Join(ms[:maxListed], ", "), len(ms)-maxListed)
}
