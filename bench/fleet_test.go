package bench_test

// These tests run the SDK against a REAL nats-server embedded in-process.
// The control service and the agents are stood in for by small real NATS
// responders (bench/fakefleet) that speak the fleet wire contract;
// the full-stack end-to-end test, with the real broker, control service and
// agents, lives with those components.

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/bench/fakefleet"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// testFleet is a broker with a fake control service, an admin and a viewer
// operator, and whatever agents a test starts.
type testFleet struct {
	t       *testing.T
	URL     string
	Admin   []byte // seed
	Viewer  []byte // seed
	Control *fakefleet.Control
}

// svcAuth is how the fake control service and agents log in.
var svcAuth = nats.UserInfo("svc", "svc")

func newOperator(t *testing.T) (seed []byte, pub string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ = kp.Seed()
	pub, _ = kp.PublicKey()
	return seed, pub
}

// operatorPerms mirrors what the real broker grants an operator: publish
// calls (fns, or every call when fns is nil), presence and its own control
// subjects; subscribe to its inbox and presence events only.
func operatorPerms(pub string, fns ...string) *server.Permissions {
	pubAllow := []string{fleet.PresenceSnapshotSubject, fleet.CtlRoot + "." + pub + ".>"}
	if fns == nil {
		pubAllow = append(pubAllow, fleet.FnRoot+".>", fleet.AllRoot+".>")
	}
	for _, fn := range fns {
		pubAllow = append(pubAllow, fleet.FnRoot+".*."+fn, fleet.AllSubject(fn))
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pubAllow},
		Subscribe: &server.SubjectPermission{Allow: []string{fleet.OperatorInbox(pub) + ".>", fleet.PresenceEventsWildcard}},
	}
}

func startFleet(t *testing.T) *testFleet {
	t.Helper()
	admin, adminPub := newOperator(t)
	viewer, viewerPub := newOperator(t)
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "svc", Password: "svc"}},
		Nkeys: []*server.NkeyUser{
			{Nkey: adminPub, Permissions: operatorPerms(adminPub)},
			{Nkey: viewerPub, Permissions: operatorPerms(viewerPub, "current-load")},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(s.Shutdown)
	ctl, err := fakefleet.StartControl(s.ClientURL(), svcAuth)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctl.Close)
	ctl.AddOperator(fleet.Operator{Name: "admin", Key: adminPub, Role: fleet.RoleAdmin})
	ctl.AddOperator(fleet.Operator{Name: "viewer", Key: viewerPub, Role: fleet.RoleViewer})
	return &testFleet{t: t, URL: s.ClientURL(), Admin: admin, Viewer: viewer, Control: ctl}
}

// agent starts a fake agent; online also marks it ONLINE in presence.
func (f *testFleet) agent(id string, labels map[string]string, h fakefleet.Handler, online bool) {
	f.t.Helper()
	a, err := fakefleet.StartAgent(f.URL, id, h, svcAuth)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(a.Close)
	if online {
		f.Control.Join(id, labels)
	}
}

func (f *testFleet) connect(seed []byte) *bench.Client {
	f.t.Helper()
	c, err := bench.Connect(f.URL, bench.WithSeed(seed))
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
