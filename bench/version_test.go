package bench_test

import (
	"testing"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/internal/version"
)

// TestControlVersion: any operator, a viewer too, asks the control
// service which build it runs (the version control operation); the
// answer names the build, the replica and when it started.
func TestControlVersion(t *testing.T) {
	f := startFleet(t)
	want := version.Get()
	for _, seed := range [][]byte{f.Admin, f.Viewer} {
		v, err := f.connect(seed).ControlVersion(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if v.Version != want.Version || v.Commit != want.Commit || v.Go != want.Go || v.Replica != controlsvc.DefaultReplicaName() || v.Started.IsZero() {
			t.Fatalf("got %+v, want the build %+v of replica %s", v, want, controlsvc.DefaultReplicaName())
		}
	}
}

// TestAgentVersions: the selected ONLINE machines are grouped by the
// version their agents report in their facts; one that reported none is
// "unknown", and a machine --where leaves out is not counted.
func TestAgentVersions(t *testing.T) {
	f := startFleet(t)
	f.agent("10.0.3.1_web01", map[string]string{"role": "web"})
	f.agent("10.0.3.2_web02", map[string]string{"role": "web"})
	f.agent("10.0.3.3_db01", map[string]string{"role": "db"})
	sel, err := bench.ParseSelector("role=web")
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.connect(f.Viewer).AgentVersions(testCtx(t), sel)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range got {
		if g.Version != bench.UnknownVersion && g.Version != agent.Version {
			t.Errorf("version %q: want %q, or %q until the agents report facts", g.Version, agent.Version, bench.UnknownVersion)
		}
		n += len(g.Machines)
	}
	if n != 2 {
		t.Fatalf("got %+v, want the two web machines", got)
	}
}
