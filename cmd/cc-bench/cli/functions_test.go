package cli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/fleet"
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

// TestFunctionsCommandAnswerNamingAnother: a machine whose discovery
// answer names another machine is not counted for either: stderr says
// whose answer was ignored and why, the machine it named is listed with
// its own functions only, and the exit code is 1.
func TestFunctionsCommandAnswerNamingAnother(t *testing.T) {
	f := startFleet(t)
	f.agent("10.0.0.1_web01", nil)
	const evil = "10.0.0.9_evil"
	stacktest.RegisterMachine(t, f.svc, evil, nil)
	nc := stacktest.Connect(t, f.url, stacktest.MachineKey(t, evil), evil)
	lie, _ := json.Marshal(micro.Info{Type: micro.InfoResponseType, ServiceIdentity: micro.ServiceIdentity{
		Name: fleet.AgentServiceName, Metadata: map[string]string{"machine": "10.0.0.1_web01", fleet.AgentFunctionsMeta: `[{"name":"restart-db"}]`}}})
	if _, err := nc.Subscribe(fleet.SrvSubject(fleet.SrvInfo, fleet.AgentServiceName, fleet.AgentInstanceID(evil)), func(m *nats.Msg) {
		_ = nc.Publish(m.Reply, lie)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitOnline(t, f.svc, evil)

	stdout, stderr, code := cc(t, f.env(), "functions")
	want := `ignored the answer of 10.0.0.9_evil: its answer names machine "10.0.0.1_web01"` + "\n" +
		"1 of 2 machines did not answer in "
	if code != exitFailure || !strings.HasPrefix(stderr, want) || strings.Contains(stdout, "restart-db") || !strings.Contains(stdout, "machine-info") {
		t.Fatalf("exit %d, stderr %q, stdout:\n%s", code, stderr, stdout)
	}
}
