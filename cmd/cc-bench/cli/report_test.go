package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// dnfPatches is what a Fedora machine's agent answers: advisories with
// severities, one naming CVEs.
var dnfPatches = map[string]any{
	"source": "dnf", "security_index": []any{}, "pending_count": 2, "installed": []any{}, "installed_count": 0, "notes": []any{},
	"pending": []any{
		map[string]any{"name": "openssl-libs", "arch": "x86_64", "installed": "1:3.1.1-4.fc39", "available": "1:3.1.4-2.fc39",
			"source": "openssl", "advisory": "FEDORA-2024-1f2e3d", "severity": "Important", "cves": []any{"CVE-2024-0727", "CVE-2023-6129"}},
		map[string]any{"name": "libssh", "arch": "x86_64", "installed": "0.10.5-2.fc39", "available": "0.10.6-1.fc39",
			"source": "libssh", "advisory": "FEDORA-2024-aa11bb", "severity": "Moderate"},
	},
}

// patchFleet: two Debian machines whose agents run the real
// installed-sec-patches on the Debian fixture root, a week after its
// security index expired; a Fedora machine; one without a package
// database; one that does not answer.
func patchFleet(t *testing.T) *testFleet {
	f := startFleet(t)
	for _, id := range []string{"10.0.0.1_web01", "10.0.0.2_web02"} {
		stacktest.RegisterMachine(t, f.svc, id, map[string]string{"role": "web"})
		set := functions.New(&functions.Env{Root: debianRoot, MachineID: id, Version: "test", Now: func() time.Time { return indexExpired }})
		stacktest.RunAgent(t, f.svc, stacktest.NewAgentWith(t, agent.Config{URL: f.url, MachineID: id, Functions: set}))
	}
	f.agent("10.0.0.3_fedora", map[string]string{"role": "db"}, stacktest.Result(fleet.FnInstalledSecPatches, dnfPatches, functions.Arg{Name: "name", Type: functions.TypeString}))
	f.agent("10.0.0.4_distroless", map[string]string{"role": "db"}, stacktest.Fail(fleet.FnInstalledSecPatches, fleet.CodeUnavailable, "no dpkg, rpm or apk database under /", functions.Arg{Name: "name", Type: functions.TypeString}))
	f.agent("10.0.0.5_silent", map[string]string{"role": "db"}, stacktest.Silent(t, fleet.FnInstalledSecPatches, functions.Arg{Name: "name", Type: functions.TypeString}))
	return f
}

func TestReportPatches(t *testing.T) {
	f := patchFleet(t)
	stdout, stderr, code := cc(t, f.env(), "report", "patches", "--arg", "name=lib*ss*", "--timeout", "2s")
	if code != exitFailure {
		t.Errorf("exit %d, want 1 (a machine did not answer): %s", code, stderr)
	}
	golden(t, "report_patches", stdout)

	stdout, stderr, code = cc(t, f.env(), "report", "patches", "--arg", "name=lib*ss*", "--where", "role=web", "--output", "csv")
	if code != exitOK {
		t.Errorf("csv: exit %d: %s", code, stderr)
	}
	golden(t, "report_patches_csv", stdout)

	stdout, stderr, code = cc(t, f.env(), "report", "patches", "--where", "hostname=fedora", "--json")
	var raw struct {
		Updates  []map[string]any `json:"updates"`
		Machines []map[string]any `json:"machines"`
	}
	if code != exitOK || json.Unmarshal([]byte(stdout), &raw) != nil || len(raw.Updates) != 3 || len(raw.Machines) != 1 {
		t.Errorf("json: exit %d, %q %s", code, stdout, stderr)
	} else if u := raw.Updates[0]; u["package"] != "libssh" || u["machines"] != 1.0 || u["advisory"] != "FEDORA-2024-aa11bb" {
		t.Errorf("json: first update %v", u)
	}

	// Every machine up to date, in the selection.
	stdout, _, code = cc(t, f.env(), "report", "patches", "--where", "role=web", "--arg", "name=zzz")
	if code != exitOK || !strings.Contains(stdout, "No pending security update on the 2 machines that answered.") {
		t.Errorf("none pending: exit %d:\n%s", code, stdout)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"report"}, "report needs a report: patches"},
		{[]string{"report", "cves"}, `unknown report "cves": want patches`},
		{[]string{"report", "patches", "x"}, `report patches takes no arguments, got "x"`},
		{[]string{"report", "patches", "--output", "yaml"}, `--output "yaml": want table, csv, json`},
		{[]string{"report", "patches", "--where", "a=b", "--machine", "10.0.0.1_web01"}, "either --machine or --where"},
	} {
		_, stderr, code := cc(t, f.env(), tt.args...)
		if code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tt.args, code, stderr, tt.want)
		}
	}
}

// TestReportPatchesHostile: an agent's package names, versions, CVE ids
// and notes with terminal escapes, formulas and the wrong types reach
// neither the terminal raw nor a spreadsheet as a formula.
func TestReportPatchesHostile(t *testing.T) {
	evil := json.RawMessage(`{"source":"apt","pending":[{"name":"` + jsonEsc(escClear) + `","available":"=1+1","cves":["` + jsonEsc(escTitle) + `",3]},` +
		`{"name":7},"x",{"name":"ok","advisory":{"a":1}}],"notes":["` + jsonEsc(escReload) + `"]}`)
	replies := []viewReply{newViewReply(bench.Reply{Machine: "10.6.6.6_evil", Status: bench.StatusOK, Result: evil})}
	rep := buildPatchReport(replies)
	var table, csv strings.Builder
	if err := rep.table(&table, &bench.Summary{Expected: 1, NumOK: 1}); err != nil {
		t.Fatal(err)
	}
	checkTerminalSafe(t, "report table", table.String())
	if err := rep.csv(&csv); err != nil {
		t.Fatal(err)
	}
	checkTerminalSafe(t, "report csv", csv.String())
	if strings.Contains(csv.String(), ",=") || !strings.Contains(csv.String(), ",'=1+1,") {
		t.Errorf("csv: a formula cell:\n%s", csv.String())
	}
	if len(rep.updates) != 2 {
		t.Errorf("got %d updates, want 2 (the escaped name, ok): %+v", len(rep.updates), rep.updates)
	}
}

func TestReportHelp(t *testing.T) {
	for _, args := range [][]string{{"report", "--help"}, {"help", "report"}, {"report", "patches", "-h"}} {
		stdout, stderr, code := cc(t, nil, args...)
		if code != exitOK || stderr != "" || !strings.Contains(stdout, "Usage: cc-bench report patches") ||
			!strings.Contains(stdout, "--output FORMAT") || !strings.Contains(stdout, "Examples:") {
			t.Errorf("%q: exit %d, stderr %q:\n%s", args, code, stderr, stdout)
		}
	}
}
