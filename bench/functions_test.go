package bench_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestFunctions: real agents describe what they serve in their micro
// discovery INFO; Functions lists each function once, with its
// arguments, its role and the selected machines serving it: the
// built-ins on every machine, a Go function on one, an operator's
// definition (agent/custom, from a functions directory) on another.
// --where leaves the other machines out; a viewer may not ask.
func TestFunctions(t *testing.T) {
	f := startFleet(t)
	f.agent("10.0.4.1_web01", map[string]string{"role": "web"},
		stacktest.Result("grep-log", "x", functions.Arg{Name: "pattern", Type: functions.TypeString, Required: true}, functions.Arg{Name: "limit", Type: functions.TypeInt}))
	dir := t.TempDir()
	def := `{"name":"restart-web","description":"restarts the web server","command":["/bin/true","{{unit}}"],
		"args":[{"name":"unit","type":"string","required":true}],"read_only":false}`
	if err := os.WriteFile(filepath.Join(dir, "restart-web.json"), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	const custom = "10.0.4.2_web02"
	stacktest.RegisterMachine(t, f.Svc, custom, map[string]string{"role": "web"})
	stacktest.RunAgent(t, f.Svc, stacktest.NewAgentWith(t, agent.Config{URL: f.URL, MachineID: custom, FunctionsDir: dir, NoSamplers: true}))
	f.agent("10.0.4.3_db01", map[string]string{"role": "db"}, stacktest.Result("vacuum", "ok"))

	sel, err := bench.ParseSelector("role=web")
	if err != nil {
		t.Fatal(err)
	}
	cat, err := f.connect(f.Admin).Functions(testCtx(t), sel)
	if err != nil {
		t.Fatal(err)
	}
	if cat.Asked != 2 || len(cat.NoAnswer) != 0 {
		t.Fatalf("asked %d, no answer %v: want the two web machines, both answering", cat.Asked, cat.NoAnswer)
	}
	by := map[string]bench.Function{}
	for _, fn := range cat.Functions {
		by[fn.Name] = fn
	}
	for _, b := range fleet.BuiltinFunctions {
		fn := by[b.Name]
		if len(fn.Machines) != 2 || !fn.Described || fn.ReadOnly != b.ReadOnly || fn.Differs {
			t.Errorf("built-in %s: %+v", b.Name, fn)
		}
	}
	grep := by["grep-log"]
	if !slices.Equal(grep.Machines, []string{"10.0.4.1_web01"}) || !grep.ReadOnly ||
		!slices.Equal(grep.Args, []fleet.FunctionArg{{Name: "pattern", Type: "string", Required: true}, {Name: "limit", Type: "int"}}) {
		t.Errorf("grep-log: %+v", grep)
	}
	restart := by["restart-web"]
	if !slices.Equal(restart.Machines, []string{custom}) || restart.ReadOnly || restart.Help != "restarts the web server" ||
		!slices.Equal(restart.Args, []fleet.FunctionArg{{Name: "unit", Type: "string", Required: true}}) {
		t.Errorf("restart-web (an operator's definition): %+v", restart)
	}
	if _, ok := by["vacuum"]; ok {
		t.Errorf("vacuum is served by a machine --where leaves out: %+v", by["vacuum"])
	}

	if _, err := f.connect(f.Viewer).Functions(testCtx(t), bench.Selector{}); !errors.Is(err, bench.ErrDiscoveryNotAllowed) {
		t.Fatalf("a viewer: got %v, want ErrDiscoveryNotAllowed", err)
	}
}

// TestFunctionsBadAnswers: a machine whose discovery answer cannot be
// read (here a registered machine's own connection answering garbage in
// its function descriptions) is reported as such, not trusted and not a
// crash; so is one whose answer names another machine (its own word
// about itself is all it may give, and it is not credited to the machine
// it names); one that never answers is listed when the deadline ends the
// wait; the well-behaved agent is listed.
func TestFunctionsBadAnswers(t *testing.T) {
	f := startFleet(t)
	f.agent("10.0.5.1_good", nil)
	answer := func(id string, meta map[string]string) {
		stacktest.RegisterMachine(t, f.Svc, id, nil)
		nc := stacktest.Connect(t, f.URL, stacktest.MachineKey(t, id), id)
		if _, err := nc.Subscribe(fleet.SrvSubject(fleet.SrvInfo, fleet.AgentServiceName, fleet.AgentInstanceID(id)), func(m *nats.Msg) {
			if meta == nil {
				return // silent
			}
			b, _ := json.Marshal(micro.Info{Type: micro.InfoResponseType, ServiceIdentity: micro.ServiceIdentity{Name: fleet.AgentServiceName, Metadata: meta}})
			_ = nc.Publish(m.Reply, b)
		}); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		stacktest.WaitOnline(t, f.Svc, id)
	}
	answer("10.0.5.2_liar", map[string]string{"machine": "10.0.5.2_liar", fleet.AgentFunctionsMeta: `[{"name":"x\u001b[2J"}]`})
	answer("10.0.5.3_silent", nil)
	answer("10.0.5.4_other", map[string]string{"machine": "10.0.5.1_good", fleet.AgentFunctionsMeta: `[{"name":"restart-db"}]`})

	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	c := f.connect(f.Admin)
	// The deadline ends the wait for the silent machine: it is cancelled
	// once the three others have answered, which a subscription to the
	// same answers shows, and a round trip to the broker has passed (so
	// the answers are also queued for Functions' own subscription, which
	// reads what is queued before it looks at the deadline).
	seen := 0
	probe, err := c.Conn().Subscribe(fleet.MachineDiscoveryReplies(c.Key(), ">"), func(*nats.Msg) {
		if seen++; seen == 3 {
			go func() {
				_ = c.Conn().Flush()
				cancel()
			}()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Unsubscribe()
	cat, err := c.Functions(ctx, bench.Selector{})
	if err != nil {
		t.Fatal(err)
	}
	if cat.Asked != 4 || !slices.Equal(cat.NoAnswer, []string{"10.0.5.2_liar", "10.0.5.3_silent", "10.0.5.4_other"}) ||
		len(cat.Malformed) != 2 || !strings.HasPrefix(cat.Malformed[0], "10.0.5.2_liar: ") ||
		cat.Malformed[1] != `10.0.5.4_other: its answer names machine "10.0.5.1_good"` {
		t.Fatalf("asked %d, no answer %v, malformed %q", cat.Asked, cat.NoAnswer, cat.Malformed)
	}
	for _, fn := range cat.Functions {
		if !slices.Equal(fn.Machines, []string{"10.0.5.1_good"}) || fn.Name == "restart-db" {
			t.Errorf("%s served by %v: want the good machine only, with its own functions", fn.Name, fn.Machines)
		}
	}
}
