package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestFunctionsCommand: cc-bench functions lists what the selected
// machines serve: the built-ins, a Go function on one machine and an
// operator's definition (a functions directory) on another, with their
// arguments, role and how many machines serve each. A viewer is told it
// needs an admin.
func TestFunctionsCommand(t *testing.T) {
	f := startFleet(t)
	web := map[string]string{"role": "web"}
	f.agent("10.0.0.1_web01", web, stacktest.Result("grep-log", "x",
		functions.Arg{Name: "pattern", Type: functions.TypeString, Required: true}, functions.Arg{Name: "limit", Type: functions.TypeInt}))
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "restart-web.json"), []byte(`{"name":"restart-web","description":"restarts the web server",
		"command":["/bin/true","{{unit}}"],"args":[{"name":"unit","type":"string","required":true}],"read_only":false}`))
	stacktest.RegisterMachine(t, f.svc, "10.0.0.2_web02", web)
	stacktest.RunAgent(t, f.svc, stacktest.NewAgentWith(t, agent.Config{URL: f.url, MachineID: "10.0.0.2_web02", FunctionsDir: dir, NoSamplers: true}))
	f.agent("10.0.0.3_db01", map[string]string{"role": "db"}, stacktest.Result("vacuum", "ok"))

	stdout, stderr, code := cc(t, f.env(), "functions", "--where", "role=web")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	golden(t, "functions", stdout)

	stdout, _, code = cc(t, f.env(), "functions", "--json")
	if code != exitOK || !strings.Contains(stdout, `{"name":"vacuum","read_only":true,"help":"a test function","described":true,"machines":["10.0.0.3_db01"]}`) {
		t.Fatalf("--json: exit %d:\n%s", code, stdout)
	}
	env := f.env()
	env["CC_KEY"] = f.viewerKey
	if _, stderr, code := cc(t, env, "functions"); code != exitFailure || !strings.Contains(stderr, "only an admin may ask the agents what they serve") {
		t.Fatalf("viewer: exit %d, stderr %q", code, stderr)
	}
}

// TestFunctionsAndVersionHelp: both commands have --help (exit 0, usage
// and examples on stdout) and are listed by cc-bench --help.
func TestFunctionsAndVersionHelp(t *testing.T) {
	for _, cmd := range []string{"functions", "version"} {
		stdout, stderr, code := cc(t, nil, cmd, "--help")
		if code != exitOK || stderr != "" || !strings.Contains(stdout, "Usage: cc-bench "+cmd) || !strings.Contains(stdout, "--where") || !strings.Contains(stdout, "Examples:") {
			t.Errorf("%s --help: exit %d, stderr %q:\n%s", cmd, code, stderr, stdout)
		}
		if stdout, _, _ := cc(t, nil, "--help"); !strings.Contains(stdout, "\n  "+cmd+" ") {
			t.Errorf("cc-bench --help does not list %s", cmd)
		}
	}
	if _, stderr, code := cc(t, nil, "functions", "extra"); code != exitUsage || !strings.Contains(stderr, "functions takes no arguments") {
		t.Errorf("functions extra: exit %d, stderr %q", code, stderr)
	}
}
