package bench_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// tryJoin makes machine id try to connect with key kp, as an agent does,
// and checks that the broker refused it.
func tryJoin(t *testing.T, f *testFleet, id string, kp nkeys.KeyPair) {
	t.Helper()
	nc, err := stacktest.Dial(f.URL, kp, id)
	if err == nil {
		nc.Close()
		t.Fatalf("%s connected; want it refused", id)
	}
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("%s: err = %v, want an authorization error", id, err)
	}
}

func TestControlAPI(t *testing.T) {
	f := startFleet(t)
	newKey := stacktest.Key(t, "new")
	newPub := stacktest.Pub(t, newKey)
	tryJoin(t, f, "10.0.0.7_new", newKey) // unknown: refused and recorded as pending
	tryJoin(t, f, "10.0.0.7_new", newKey)
	ctx := testCtx(t)
	c := f.connect(f.Admin)

	who, err := c.WhoAmI(ctx)
	if err != nil || who.Operator != "admin" || who.Role != fleet.RoleAdmin {
		t.Fatalf("whoami = %+v, %v", who, err)
	}
	pend, err := c.PendingMachines(ctx)
	if err != nil || len(pend) != 1 || pend[0].ID != "10.0.0.7_new" || pend[0].Attempts != 2 {
		t.Fatalf("pending = %+v, %v", pend, err)
	}
	if m, err := c.AcceptMachine(ctx, "10.0.0.7_new", ""); err != nil || m == nil || m.Key != newPub {
		t.Fatalf("accept = %+v, %v", m, err)
	}
	webPub := stacktest.Pub(t, stacktest.Key(t, "web"))
	if _, err := c.AddMachine(ctx, "10.0.0.8_web", webPub, map[string]string{"role": "web"}); err != nil {
		t.Fatal(err)
	}
	m, err := c.LabelMachine(ctx, "10.0.0.8_web", map[string]string{"env": "prod"}, []string{"role"})
	if err != nil || m.Labels["env"] != "prod" || m.Labels["role"] != "" {
		t.Fatalf("label = %+v, %v", m, err)
	}
	list, err := c.Machines(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("machines = %+v, %v", list, err)
	}
	if _, err := c.RemoveMachine(ctx, "10.0.0.8_web"); err != nil {
		t.Fatal(err)
	}
	_, err = c.RemoveMachine(ctx, "10.0.0.8_web")
	if fe := new(fleet.Error); !errors.As(err, &fe) || fe.Code != fleet.CodeNotFound {
		t.Errorf("second rm: err = %v, want a 404 *fleet.Error", err)
	}
	if _, err := c.AddOperator(ctx, "bob", stacktest.Pub(t, stacktest.Key(t, "bob")), fleet.RoleViewer); err != nil {
		t.Fatal(err)
	}
	ops, err := c.Operators(ctx)
	if err != nil || len(ops) != 3 {
		t.Fatalf("operators = %+v, %v", ops, err)
	}
	if _, err := c.RemoveOperator(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
}

func TestControlForbiddenForViewer(t *testing.T) {
	f := startFleet(t)
	c := f.connect(f.Viewer)
	if _, err := c.Machines(testCtx(t)); err != nil {
		t.Fatalf("viewer may list machines: %v", err)
	}
	_, err := c.AddMachine(testCtx(t), "10.0.0.9_x", stacktest.Pub(t, stacktest.Key(t, "x")), nil)
	var fe *fleet.Error
	if !errors.As(err, &fe) || fe.Code != fleet.CodeForbidden {
		t.Errorf("err = %v, want a 403 *fleet.Error", err)
	}
}

func TestConnectErrors(t *testing.T) {
	f := startFleet(t)
	stranger := stacktest.Seed(t, stacktest.Key(t, "stranger"))
	if _, err := bench.Connect(f.URL, bench.WithSeed(stranger)); !errors.Is(err, bench.ErrRefused) {
		t.Errorf("unknown key: err = %v, want ErrRefused", err)
	}
	// The default connection name is no machine id: the refused operator
	// key is not taken for a machine asking to join.
	if pend, err := f.connect(f.Admin).PendingMachines(testCtx(t)); err != nil || len(pend) != 0 {
		t.Errorf("pending after an unknown operator key: %+v, %v; want none", pend, err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "nats://" + l.Addr().String()
	l.Close()
	if _, err := bench.Connect(closed, bench.WithSeed(f.Admin)); !errors.Is(err, bench.ErrUnreachable) {
		t.Errorf("closed port: err = %v, want ErrUnreachable", err)
	}

	acct, _ := nkeys.CreateAccount()
	acctSeed, _ := acct.Seed()
	if _, err := bench.Connect(f.URL, bench.WithSeed(acctSeed)); !errors.Is(err, bench.ErrBadSeed) {
		t.Errorf("account seed: err = %v, want ErrBadSeed", err)
	}
	if _, err := bench.Connect(f.URL, bench.WithSeed([]byte("not a seed"))); !errors.Is(err, bench.ErrBadSeed) {
		t.Errorf("garbage: err = %v, want ErrBadSeed", err)
	}
	if _, err := bench.Connect(f.URL, bench.WithSeedFile(filepath.Join(t.TempDir(), "missing.nk"))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v, want os.ErrNotExist", err)
	}
}

func TestConnectSeedFileAndKey(t *testing.T) {
	f := startFleet(t)
	path := filepath.Join(t.TempDir(), "admin.nk")
	if err := os.WriteFile(path, append(f.Admin, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := bench.Connect(f.URL, bench.WithSeedFile(path), bench.WithName("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	kp, _ := nkeys.FromSeed(f.Admin)
	pub, _ := kp.PublicKey()
	if c.Key() != pub {
		t.Errorf("Key() = %s, want %s", c.Key(), pub)
	}
	if c.Conn().Opts.InboxPrefix != fleet.ControlInbox(pub) {
		t.Errorf("inbox prefix %q, want %q", c.Conn().Opts.InboxPrefix, fleet.ControlInbox(pub))
	}
}

// TestControlWithoutKey: a client whose connection authenticates through
// plain NATS options, not WithSeed, does not know its operator key.
func TestControlWithoutKey(t *testing.T) {
	f := startFleet(t)
	kp, err := nkeys.FromSeed(f.Admin)
	if err != nil {
		t.Fatal(err)
	}
	pub := stacktest.Pub(t, kp)
	c, err := bench.Connect(f.URL, bench.WithNATSOptions(nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(fleet.ControlInbox(pub))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WhoAmI(testCtx(t)); !errors.Is(err, bench.ErrNoKey) {
		t.Errorf("err = %v, want ErrNoKey", err)
	}
}

// TestSeedFileReadableByOthers: the SDK refuses an operator seed that group
// or others can read, before it dials, naming the file, its mode and the fix.
func TestSeedFileReadableByOthers(t *testing.T) {
	p := filepath.Join(t.TempDir(), "admin.nk")
	if err := os.WriteFile(p, stacktest.Seed(t, stacktest.Key(t, "op")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	_, err := bench.Connect("nats://127.0.0.1:1", bench.WithSeedFile(p))
	if !errors.Is(err, bench.ErrKeyFileMode) {
		t.Fatalf("got %v, want ErrKeyFileMode", err)
	}
	for _, want := range []string{p + " has mode 0640", "chmod 600 " + p} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
