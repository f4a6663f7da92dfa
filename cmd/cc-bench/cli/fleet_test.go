package cli

// These tests run cc-bench against a REAL nats-server embedded in-process.
// The control service and the agents are stood in for by small real NATS
// responders (bench/fakefleet) that speak the fleet wire contract;
// the full-stack end-to-end test, with the real broker, control service and
// agents, lives with those components.

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/bench/fakefleet"
	"github.com/commandcontrol/commandcontrol/fleet"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// t0 is the fake control service's clock; the CLI's clock is 90 minutes on.
var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func TestMain(m *testing.M) {
	time.Local = time.UTC
	now = func() time.Time { return t0.Add(90 * time.Minute) }
	os.Exit(m.Run())
}

var svcAuth = nats.UserInfo("svc", "svc")

// operatorKey makes a deterministic operator nkey from one byte.
func operatorKey(t *testing.T, b byte) (seed []byte, pub string) {
	t.Helper()
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	seed, _ = kp.Seed()
	pub, _ = kp.PublicKey()
	return seed, pub
}

type testFleet struct {
	t                   *testing.T
	url                 string
	adminKey, viewerKey string // key files
	adminPub            string
	ctl                 *fakefleet.Control
}

func startFleet(t *testing.T) *testFleet {
	t.Helper()
	adminSeed, adminPub := operatorKey(t, 1)
	viewerSeed, viewerPub := operatorKey(t, 2)
	perms := func(pub string) *server.Permissions {
		return &server.Permissions{
			Subscribe: &server.SubjectPermission{Allow: []string{fleet.OperatorInbox(pub) + ".>", fleet.PresenceEventsWildcard}},
		}
	}
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "svc", Password: "svc"}},
		Nkeys: []*server.NkeyUser{{Nkey: adminPub, Permissions: perms(adminPub)}, {Nkey: viewerPub, Permissions: perms(viewerPub)}},
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
	ctl.Now = func() time.Time { return t0 }
	ctl.AddOperator(fleet.Operator{Name: "admin", Key: adminPub, Role: fleet.RoleAdmin, AddedAt: t0})
	ctl.AddOperator(fleet.Operator{Name: "viewer", Key: viewerPub, Role: fleet.RoleViewer, AddedAt: t0})
	dir := t.TempDir()
	f := &testFleet{t: t, url: s.ClientURL(), adminPub: adminPub, ctl: ctl,
		adminKey: filepath.Join(dir, "admin.nk"), viewerKey: filepath.Join(dir, "viewer.nk")}
	for path, seed := range map[string][]byte{f.adminKey: adminSeed, f.viewerKey: viewerSeed} {
		if err := os.WriteFile(path, seed, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *testFleet) agent(id string, labels map[string]string, h fakefleet.Handler) {
	f.t.Helper()
	a, err := fakefleet.StartAgent(f.url, id, h, svcAuth)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(a.Close)
	f.ctl.Join(id, labels)
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// cc runs cc-bench with env vars (KEY=value) and args.
func cc(t *testing.T, vars map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return ccCtx(context.Background(), t, vars, &syncBuffer{}, args...)
}

func ccCtx(ctx context.Context, t *testing.T, vars map[string]string, out *syncBuffer, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var errb syncBuffer
	code = run(ctx, args, out, &errb, func(k string) string { return vars[k] })
	return out.String(), errb.String(), code
}

// env returns the CC_SERVER / CC_KEY variables for the fleet as admin.
func (f *testFleet) env() map[string]string {
	return map[string]string{"CC_SERVER": f.url, "CC_KEY": f.adminKey}
}

var tookRe = regexp.MustCompile(`took [0-9.]+[µnm]?s`)

// golden compares got with testdata/name.golden, or rewrites it with
// -update. Call durations are replaced by "took X".
func golden(t *testing.T, name, got string) {
	t.Helper()
	got = tookRe.ReplaceAllString(got, "took X")
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", name, path,
			got, strings.TrimRight(string(want), "\n"))
	}
}
