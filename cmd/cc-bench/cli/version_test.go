package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/internal/version"
)

// testBuild is the build every version in these tests' output shows.
var testBuild = version.Info{Version: "v1.4.0", Commit: "c5ae30f1a2b3c4d5e6f708192a3b4c5d6e7f8091", Go: "go1.26.0"}

// TestVersionFlag: cc-bench --version prints this binary's version line
// without connecting, exit 0; it is a flag before the command only.
func TestVersionFlag(t *testing.T) {
	defer version.Override(testBuild)()
	stdout, stderr, code := cc(t, map[string]string{"CC_SERVER": "nats://127.0.0.1:1"}, "--version")
	if code != exitOK || stderr != "" || stdout != "cc-bench v1.4.0 commit c5ae30f1a2b3c4d5e6f708192a3b4c5d6e7f8091 go1.26.0\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if _, stderr, code := cc(t, nil, "servers", "--version"); code != exitUsage || !strings.Contains(stderr, "flag provided but not defined: -version") {
		t.Fatalf("servers --version: exit %d, stderr %q", code, stderr)
	}
	if _, stderr, code := cc(t, nil, "version", "extra"); code != exitUsage || !strings.Contains(stderr, "version takes no arguments") {
		t.Fatalf("version extra: exit %d, stderr %q", code, stderr)
	}
}

// TestVersionCommand: cc-bench version shows this cc-bench, the control
// service (its build, replica and start) and the agents of the selected
// ONLINE machines grouped by version: "unknown" for agents whose facts
// name none. A viewer may ask.
func TestVersionCommand(t *testing.T) {
	defer version.Override(testBuild)()
	f := startFleet(t)
	web := map[string]string{"role": "web"}
	f.agent("10.0.0.1_web01", web)
	f.agent("10.0.0.2_web02", web)
	f.agent("10.0.0.3_db01", map[string]string{"role": "db"})
	env := f.env()
	env["CC_KEY"] = f.viewerKey
	stdout, stderr, code := cc(t, env, "version", "--where", "role=web")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	golden(t, "version", strings.ReplaceAll(stdout, controlsvc.DefaultReplicaName(), "REPLICA"))

	stdout, _, code = cc(t, env, "version", "--json")
	var lines []versionLine
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var v versionLine
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("%v: %q", err, l)
		}
		lines = append(lines, v)
	}
	if code != exitOK || len(lines) < 3 || lines[0].Component != "cc-bench" || lines[1].Component != "cc-control" ||
		lines[1].Commit != testBuild.Commit || lines[1].Replica != controlsvc.DefaultReplicaName() || lines[2].Component != "cc-agent" || lines[2].Count != 3 {
		t.Fatalf("--json: exit %d:\n%s", code, stdout)
	}
}
