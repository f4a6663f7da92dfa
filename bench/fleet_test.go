package bench_test

// These tests run the SDK against the REAL stack in-process
// (internal/stacktest): the control service with its embedded broker and
// auth callout, real agents connecting with their own nkeys, and operators
// registered in the real registry. Test functions are added to the agents
// to make a machine answer a given result, fail, stay silent or be slow.

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// testFleet is a control service with an admin and a viewer operator, and
// whatever agents a test starts.
type testFleet struct {
	t      *testing.T
	Svc    *controlsvc.Service
	URL    string
	Admin  []byte // seed
	Viewer []byte // seed
}

func startFleet(t *testing.T) *testFleet {
	t.Helper()
	svc := stacktest.StartControl(t)
	return &testFleet{
		t: t, Svc: svc, URL: svc.ClientURL(),
		Admin:  stacktest.AdminSeed(t, svc),
		Viewer: stacktest.OperatorSeed(t, svc, "viewer", fleet.RoleViewer),
	}
}

// agent starts a real agent for machine id with labels, serving fns beside
// the built-ins, and waits until it is ONLINE.
func (f *testFleet) agent(id string, labels map[string]string, fns ...functions.Function) {
	f.t.Helper()
	stacktest.StartAgent(f.t, f.Svc, id, labels, fns...)
}

func (f *testFleet) connect(seed []byte, opts ...nats.Option) *bench.Client {
	f.t.Helper()
	c, err := bench.Connect(f.URL, bench.WithSeed(seed), bench.WithNATSOptions(opts...))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(c.Close)
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
