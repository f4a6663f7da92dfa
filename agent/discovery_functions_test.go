package agent_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestDiscoveryDescribesFunctions: the agent's INFO answer describes the
// functions it serves now (fleet.AgentFunctionsMeta: name, read-only,
// help, arguments) beside their names: the built-ins, and an operator's
// definition added to the functions directory after the agent connected,
// once a reload has loaded it.
func TestDiscoveryDescribesFunctions(t *testing.T) {
	svc := stacktest.StartControl(t)
	dir := t.TempDir()
	const id = "10.0.8.2_srv"
	a := runAgent(t, svc, id, agent.Config{FunctionsDir: dir, FunctionsPoll: -1})

	akp, err := nkeys.FromSeed(stacktest.AdminSeed(t, svc))
	if err != nil {
		t.Fatal(err)
	}
	key := stacktest.Pub(t, akp)
	admin := stacktest.Connect(t, svc.ClientURL(), akp, "admin-info")
	inbox := fleet.DiscoveryInbox(key) + ".info"
	sub, err := admin.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	info := func() (names string, fns []fleet.FunctionInfo) {
		t.Helper()
		if err := admin.PublishRequest(fleet.SrvSubject(fleet.SrvInfo, fleet.AgentServiceName, ""), inbox, nil); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsg(stacktest.WaitTimeout)
		if err != nil {
			t.Fatal(err)
		}
		var got micro.Info
		if err := json.Unmarshal(m.Data, &got); err != nil {
			t.Fatal(err)
		}
		fns, err = fleet.DecodeFunctionInfos(got.Metadata[fleet.AgentFunctionsMeta])
		if err != nil {
			t.Fatalf("%v: %s", err, m.Data)
		}
		return got.Metadata[fleet.AgentFunctionNamesMeta], fns
	}
	names, fns := info()
	var want []string
	for _, b := range fleet.BuiltinFunctions {
		want = append(want, b.Name)
	}
	var got []string
	for _, f := range fns {
		got = append(got, f.Name)
		if b, ok := fleet.Builtin(f.Name); !ok || b.ReadOnly != f.ReadOnly || f.Help == "" {
			t.Errorf("described %+v: want a built-in with its help and role", f)
		}
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("described %v (names %q), want the built-ins %v", got, names, want)
	}

	def := `{"name":"restart-web","description":"restarts the web server","command":["/bin/true"],
		"args":[{"name":"unit","type":"string","required":true,"help":"the unit"}],"read_only":false}`
	if err := os.WriteFile(filepath.Join(dir, "restart-web.json"), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	a.Reload()
	var restart fleet.FunctionInfo
	stacktest.WaitFor(t, "the reloaded definition in INFO", 10*time.Second, func() bool {
		_, fns := info()
		i := slices.IndexFunc(fns, func(f fleet.FunctionInfo) bool { return f.Name == "restart-web" })
		if i >= 0 {
			restart = fns[i]
		}
		return i >= 0
	})
	wantDef := fleet.FunctionInfo{Name: "restart-web", Help: "restarts the web server",
		Args: []fleet.FunctionArg{{Name: "unit", Type: "string", Help: "the unit", Required: true}}}
	if restart.Name != wantDef.Name || restart.ReadOnly || restart.Help != wantDef.Help || !slices.Equal(restart.Args, wantDef.Args) {
		t.Fatalf("got %+v, want %+v", restart, wantDef)
	}
}
