package cli

import (
	"io"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// noTTY makes bulk changes see no terminal to confirm on (as a script
// or a pipe); answer makes them see one that answers a.
func noTTY(t *testing.T) { setConfirm(t, "", false) }

func setConfirm(t *testing.T, answer string, tty bool) {
	t.Helper()
	old := confirmIn
	confirmIn = func() (io.Reader, bool) { return strings.NewReader(answer), tty }
	t.Cleanup(func() { confirmIn = old })
}

// knock has the key made from byte b try to connect as machine id, and
// checks that it is refused.
func knock(t *testing.T, f *testFleet, b byte, id string) string {
	t.Helper()
	seed, pub := operatorKey(t, b)
	kp, _ := nkeys.FromSeed(seed)
	if nc, err := stacktest.Dial(f.url, kp, id); err == nil {
		nc.Close()
		t.Fatalf("%s connected with key %d; want it refused", id, b)
	}
	return pub
}

// TestMachinesBulkAndDeny: bulk accept takes only new pending machines,
// each with the key it tried, and only once confirmed (never without a
// terminal or --yes); patterns and --where select for ls, label and rm;
// reject drops a pending entry; a denied key is refused and never
// pending again; a viewer may list the deny list but change nothing.
func TestMachinesBulkAndDeny(t *testing.T) {
	f := startFleet(t)
	_, web1 := operatorKey(t, 11)
	_, web2 := operatorKey(t, 12)
	_, db1 := operatorKey(t, 13)
	stacktest.RegisterKey(t, f.svc, "10.0.0.1_web01", web1, map[string]string{"role": "web"})
	stacktest.RegisterKey(t, f.svc, "10.0.0.2_web02", web2, map[string]string{"role": "web"})
	stacktest.RegisterKey(t, f.svc, "10.0.0.3_db01", db1, map[string]string{"role": "db"})
	knock(t, f, 21, "10.0.1.1_new1")
	knock(t, f, 22, "10.0.1.2_new2")
	knock(t, f, 23, "10.0.1.3_twice")
	knock(t, f, 24, "10.0.1.3_twice")
	spam := knock(t, f, 25, "10.0.0.2_web02") // a stranger's key for a registered id
	knock(t, f, 27, "127.0.0.1_local")        // the one id that names where it connects from

	noTTY(t)
	reg := f.svc.Registry()
	before := len(reg.Pending())
	_, stderr, code := cc(t, f.env(), "machines", "accept", "--all-pending")
	if code != exitUsage || !strings.Contains(stderr, "no terminal") || !strings.Contains(stderr, "--yes") {
		t.Fatalf("--all-pending without a terminal or --yes: exit %d, %q; want 2", code, stderr)
	}
	if n := len(reg.Pending()); n != before || len(reg.Machines()) != 3 {
		t.Fatalf("--all-pending without --yes changed the registry: %d pending (was %d), %d machines", n, before, len(reg.Machines()))
	}
	setConfirm(t, "n\n", true)
	if _, stderr, code := cc(t, f.env(), "machines", "accept", "10.0.1.*", "--allow-ip-mismatch"); code != exitFailure || !strings.Contains(stderr, "not confirmed") {
		t.Fatalf("declined: exit %d, %q", code, stderr)
	}
	noTTY(t)

	steps := []struct {
		args []string
		code int
	}{
		// Pending ids are the connecting side's words: ip= is where they
		// connected from (127.0.0.1 here), and an id naming another
		// address is skipped unless --allow-ip-mismatch.
		{[]string{"machines", "accept", "--where", "ip=10.0.1.*", "--yes"}, exitFailure},
		{[]string{"machines", "accept", "10.0.1.?_new*", "--yes"}, exitFailure},
		{[]string{"machines", "accept", "--where", "ip=127.0.0.1", "--yes"}, exitOK},
		{[]string{"machines", "accept", "--all-pending", "--allow-ip-mismatch", "--yes"}, exitOK},
		{[]string{"machines", "ls", "*_web0?", "10.0.1.1_new1"}, exitOK},
		{[]string{"machines", "label", "--where", "role=web", "env=prod"}, exitOK},
		{[]string{"machines", "ls", "--where", "env=prod"}, exitOK},
		{[]string{"machines", "reject", "10.0.1.3_twice"}, exitOK},
		{[]string{"machines", "reject", "10.0.0.3_db01"}, exitFailure},
		{[]string{"machines", "deny", spam}, exitOK},
		{[]string{"machines", "deny", "10.0.1.3_twice"}, exitOK},
		{[]string{"machines", "deny", "10.0.0.3_db01"}, exitFailure},
		{[]string{"machines", "deny", "ls"}, exitOK},
		{[]string{"machines", "rm", "10.0.1.*"}, exitUsage},
		{[]string{"machines", "rm", "10.0.1.*", "--yes"}, exitOK},
		{[]string{"machines", "pending"}, exitOK},
	}
	var log strings.Builder
	for _, s := range steps {
		stdout, stderr, code := cc(t, f.env(), s.args...)
		if code != s.code {
			t.Errorf("%q: exit %d, want %d: %s", s.args, code, s.code, stderr)
		}
		log.WriteString("$ cc-bench " + strings.Join(s.args, " ") + "\n" + stdout + stderr)
	}
	golden(t, "machines_bulk", log.String())

	if m, _ := reg.Machine("10.0.0.2_web02"); m.Key != web2 {
		t.Errorf("the bulk accept re-keyed registered 10.0.0.2_web02 to %s", m.Key)
	}
	// The denied key, and the denied id, knock again: refused, not pending.
	knock(t, f, 25, "10.0.9.10_spam2")
	knock(t, f, 26, "10.0.1.3_twice")
	for _, p := range reg.Pending() {
		t.Errorf("pending after the deny: %s (key %s)", p.ID, p.Key)
	}

	viewer := map[string]string{"CC_SERVER": f.url, "CC_KEY": f.viewerKey}
	if _, stderr, code := cc(t, viewer, "machines", "deny", "ls"); code != exitOK {
		t.Errorf("viewer deny ls: exit %d: %s", code, stderr)
	}
	for _, args := range [][]string{{"machines", "deny", "10.0.0.66_x"}, {"machines", "undeny", spam}, {"machines", "reject", "10.0.9.9_spam"}} {
		if _, stderr, code := cc(t, viewer, args...); code != exitFailure || !strings.Contains(stderr, "403") {
			t.Errorf("viewer %q: exit %d, %q; want 403", args, code, stderr)
		}
	}
	if _, stderr, code := cc(t, f.env(), "machines", "undeny", spam); code != exitOK {
		t.Errorf("undeny: exit %d: %s", code, stderr)
	}
	knock(t, f, 25, "10.0.9.11_back")
	if p := reg.Pending(); len(p) != 1 || p[0].ID != "10.0.9.11_back" {
		t.Errorf("pending after the undeny: %+v, want the key pending again", p)
	}
}

func TestMachinesUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"machines", "accept", "--all-pending", "x"}, "give no ids"},
		{[]string{"machines", "accept", "a*", "--pubkey", "UX"}, "accept that machine alone"},
		{[]string{"machines", "accept", "a[", "--yes"}, "not a valid pattern"},
		{[]string{"machines", "ls", "bad id"}, "machine id"},
		{[]string{"machines", "pending", "--where", "a=b"}, "--where is for"},
		{[]string{"machines", "rm", "--all-pending"}, "for accept"},
		{[]string{"machines", "ls", "--allow-ip-mismatch"}, "are for accept"},
		{[]string{"machines", "deny"}, "deny needs"},
		{[]string{"machines", "deny", "bad id"}, "machine id"},
		{[]string{"machines", "reject"}, "reject needs"},
	} {
		_, stderr, code := cc(t, nil, tt.args...)
		if code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("%q: exit %d, %q; want 2 saying %q", tt.args, code, stderr, tt.want)
		}
	}
}

// TestFromMismatch: an id naming an IP address must name the one the
// connection came from (IPv4-mapped IPv6 is the same address); an id
// naming none has nothing to disagree with; an address not recorded
// never agrees.
func TestFromMismatch(t *testing.T) {
	for _, tt := range []struct {
		id, from, want string
	}{
		{"10.0.0.5_web01", "10.0.0.5", ""},
		{"10.0.0.5_web01", "::ffff:10.0.0.5", ""},
		{"10.0.0.66_evil", "127.0.0.1", "its id says 10.0.0.66, but it connected from 127.0.0.1"},
		{"10.0.0.66_evil", "", "its id says 10.0.0.66, and where it connected from is not recorded"},
		{"10.0.0.66_evil", "not-an-ip", "its id says 10.0.0.66, but it connected from not-an-ip"},
		{"fd00::5_web", "fd00:0::5", ""},
		{"fd00::5_web", "fd00::6", "its id says fd00::5, but it connected from fd00::6"},
		{"web01", "127.0.0.1", ""},
		{"web01_x", "", ""},
	} {
		if got := fromMismatch(tt.id, tt.from); got != tt.want {
			t.Errorf("fromMismatch(%q, %q) = %q, want %q", tt.id, tt.from, got, tt.want)
		}
	}
}
