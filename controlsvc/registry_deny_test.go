package controlsvc

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// TestKVDenyPersistsAndReplicates: a deny list entry one replica writes
// is in the bucket (a replica opened afterwards loads it), a running
// replica sees it, and an undeny reaches every replica too. Denying drops
// the pending entries it makes moot, and only those.
func TestKVDenyPersistsAndReplicates(t *testing.T) {
	k := startKVBroker(t)
	a, _ := k.replica(nil)
	b, _ := k.replica(nil)
	_, spam := newUser(t)
	_, other := newUser(t)
	a.RecordPendingAt("10.0.0.9_gone", spam, "192.0.2.9", "", "not in the registry")
	a.RecordPendingAt("10.0.0.10_spam", spam, "192.0.2.9", "", "not in the registry")
	a.RecordPendingAt("10.0.0.11_both", spam, "192.0.2.9", "", "not in the registry")
	a.RecordPendingAt("10.0.0.11_both", other, "192.0.2.10", "", "not in the registry")
	if err := a.FlushPending(); err != nil {
		t.Fatal(err)
	}
	res, err := a.Deny(fleet.DenyRequest{Key: spam}, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(res.DroppedPending, ","); got != "10.0.0.10_spam,10.0.0.9_gone" {
		t.Errorf("deny key dropped pending %q, want the two ids only that key tried", got)
	}
	if _, err := a.Deny(fleet.DenyRequest{ID: "10.0.0.12_old"}, "admin"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "replica B to see both deny entries", 5*time.Second, func() bool {
		_, byKey := b.Denies("10.0.0.77_any", spam)
		_, byID := b.Denies("10.0.0.12_old", other)
		return byKey && byID
	})
	waitFor(t, "replica B to drop the moot pending entries", 5*time.Second, func() bool { return len(b.Pending()) == 1 })
	if p := b.Pending(); p[0].ID != "10.0.0.11_both" {
		t.Errorf("B's pending: %+v, want only 10.0.0.11_both (tried by another key too)", p)
	}

	c, _ := k.replica(nil) // opened after: loads the list from the bucket
	if l, _, n := c.DeniedAfter("", 10); n != 2 || l[0].ID != "10.0.0.12_old" || l[1].Key != spam || l[1].AddedBy != "admin" {
		t.Errorf("a new replica loads the deny list %+v (%d), want the two entries", l, n)
	}

	if _, err := b.Undeny(fleet.DenyRequest{Key: spam}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "replica A to see the undeny", 5*time.Second, func() bool { _, d := a.Denies("x", spam); return !d })
	if _, err := a.Undeny(fleet.DenyRequest{Key: spam}); !errors.Is(err, ErrNotFound) {
		t.Errorf("undeny twice: %v, want not found", err)
	}
}

// TestDenyRules: what the deny list refuses to hold, and what it makes
// the registry refuse.
func TestDenyRules(t *testing.T) {
	r, err := OpenRegistry(filepath.Join(t.TempDir(), RegistryFile))
	if err != nil {
		t.Fatal(err)
	}
	_, machineKey := newUser(t)
	_, opKey := newUser(t)
	_, strangerKey := newUser(t)
	if _, err := r.AddMachine("10.0.0.5_web01", machineKey, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddOperator("alice", opKey, fleet.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		q    fleet.DenyRequest
		is   error
		want string
	}{
		{fleet.DenyRequest{}, ErrInvalid, "give a machine id or a public key"},
		{fleet.DenyRequest{ID: "a", Key: strangerKey}, ErrInvalid, "not both"},
		{fleet.DenyRequest{Key: "UNOTAKEY"}, ErrInvalid, "not a public user nkey"},
		{fleet.DenyRequest{ID: "bad id"}, ErrInvalid, "machine id"},
		{fleet.DenyRequest{ID: "10.0.0.5_web01"}, ErrConflict, "remove it first"},
		{fleet.DenyRequest{Key: machineKey}, ErrConflict, "registered to machine 10.0.0.5_web01"},
		{fleet.DenyRequest{Key: opKey}, ErrConflict, "belongs to operator alice"},
	} {
		_, err := r.Deny(tt.q, "admin")
		if !errors.Is(err, tt.is) || err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Deny(%+v) = %v, want %v saying %q", tt.q, err, tt.is, tt.want)
		}
	}
	if _, err := r.Deny(fleet.DenyRequest{ID: "10.0.0.9_gone"}, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Deny(fleet.DenyRequest{ID: "10.0.0.9_gone"}, "admin"); !errors.Is(err, ErrExists) {
		t.Errorf("deny twice: %v, want exists", err)
	}
	if _, err := r.Deny(fleet.DenyRequest{Key: strangerKey}, "admin"); err != nil {
		t.Fatal(err)
	}
	// A denied id or key is not registered until undenied.
	if _, err := r.AddMachine("10.0.0.9_gone", machineKey, nil, "admin", false); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "undeny 10.0.0.9_gone") {
		t.Errorf("add a denied id: %v", err)
	}
	if _, err := r.AddMachine("10.0.0.6_new", strangerKey, nil, "admin", false); !errors.Is(err, ErrConflict) {
		t.Errorf("add with a denied key: %v", err)
	}
	// Reject drops a pending entry and never a registered machine.
	if err := r.Reject("10.0.0.5_web01"); !errors.Is(err, ErrNotFound) {
		t.Errorf("reject a registered machine: %v, want not found (it is not pending)", err)
	}
	r.RecordPendingAt("10.0.0.5_web01", strangerKey, "192.0.2.1", "", "key does not match the key on record")
	if err := r.Reject("10.0.0.5_web01"); err != nil {
		t.Fatal(err)
	}
	if m, ok := r.Machine("10.0.0.5_web01"); !ok || m.Key != machineKey || len(r.Pending()) != 0 {
		t.Errorf("after reject: machine %+v %v, pending %+v; want the machine kept and nothing pending", m, ok, r.Pending())
	}
	// A bulk accept never re-keys a registered machine.
	r.RecordPendingAt("10.0.0.5_web01", strangerKey, "192.0.2.1", "", "key does not match the key on record")
	if _, err := r.AcceptNewAt("10.0.0.5_web01", "", "", "admin"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "registered already") {
		t.Errorf("AcceptNewAt of a registered id: %v", err)
	}
	// The file keeps the list.
	again, err := OpenRegistry(r.path)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, n := again.DeniedAfter("", 10); n != 2 {
		t.Errorf("registry file reloaded with %d deny entries, want 2", n)
	}
}

// TestCalloutRefusesDenied: through a real broker, a denied key (or id)
// is refused, is not recorded as pending, and its refusals are audited;
// the registered machine and operators are never refused by the list.
func TestCalloutRefusesDenied(t *testing.T) {
	b, bk := brokertest.Start(t, brokertest.WithAuthTimeout(2*time.Second))
	c, agentKP := brokerCallout(t, bk)
	type refusal struct{ name, key, reason string }
	refused := make(chan refusal, 16)
	c.onAudit = func(_, who, key, _, _, reason string) { refused <- refusal{who, key, reason} }
	ctl := brokertest.Connect(t, b, bk.Control)
	_, stop, err := c.subscribe(ctl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	if err := ctl.Flush(); err != nil {
		t.Fatal(err)
	}
	connect := func(kp nkeys.KeyPair, name string) (*nats.Conn, error) {
		pub, _ := kp.PublicKey()
		return nats.Connect(b.ClientURL(), nats.Nkey(pub, kp.Sign), nats.Name(name), nats.Timeout(5*time.Second), nats.NoReconnect())
	}
	strangerKP, strangerPub := newUser(t)
	if _, err := c.reg.Deny(fleet.DenyRequest{Key: strangerPub}, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.reg.Deny(fleet.DenyRequest{ID: "10.0.0.9_gone"}, "admin"); err != nil {
		t.Fatal(err)
	}
	otherKP, _ := newUser(t)
	for _, try := range []struct {
		kp   nkeys.KeyPair
		name string
	}{{strangerKP, "10.0.0.7_spam1"}, {strangerKP, "10.0.0.8_spam2"}, {otherKP, "10.0.0.9_gone"}, {strangerKP, "10.0.0.5_web01"}} {
		nc, err := connect(try.kp, try.name)
		if err == nil {
			nc.Close()
			t.Fatalf("%s connected; want it refused by the deny list", try.name)
		}
		r := <-refused
		if r.name != try.name || !strings.Contains(r.reason, "is on the deny list") {
			t.Errorf("%s: audited %+v, want a deny list refusal", try.name, r)
		}
	}
	if p := c.reg.Pending(); len(p) != 0 {
		t.Errorf("pending after denied attempts: %+v, want none", p)
	}
	// The registered machine still connects.
	ag, err := connect(agentKP, "10.0.0.5_web01")
	if err != nil {
		t.Fatalf("registered agent refused: %v", err)
	}
	ag.Close()
	// An unknown, undenied machine is still pending: the list refuses
	// only what it names.
	if nc, err := connect(otherKP, "10.0.0.10_new"); err == nil {
		nc.Close()
		t.Fatal("an unknown machine connected")
	}
	if p := c.reg.Pending(); len(p) != 1 || p[0].ID != "10.0.0.10_new" {
		t.Errorf("pending: %+v, want 10.0.0.10_new only", p)
	}
}

// TestDenyListExportedAndRestored: a backup (registry.export) holds the
// deny list, and restoring it (registry.import, or a registry.json moved
// into the bucket) brings it back.
func TestDenyListExportedAndRestored(t *testing.T) {
	r, err := OpenRegistry(filepath.Join(t.TempDir(), RegistryFile))
	if err != nil {
		t.Fatal(err)
	}
	_, key := newUser(t)
	if _, err := r.Deny(fleet.DenyRequest{Key: key}, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Deny(fleet.DenyRequest{ID: "10.0.0.9_gone"}, "admin"); err != nil {
		t.Fatal(err)
	}
	page, err := r.exportAfter("", 1, 1<<20) // one entry a page: the cursor crosses the kind
	if err != nil {
		t.Fatal(err)
	}
	part := page.RegistryPart
	for page.Next != "" {
		if page, err = r.exportAfter(page.Next, 1, 1<<20); err != nil {
			t.Fatal(err)
		}
		for k, v := range page.Denied {
			part.Denied[k] = v
		}
	}
	if len(part.Denied) != 2 {
		t.Fatalf("exported deny list %+v, want 2 entries", part.Denied)
	}
	k := startKVBroker(t)
	fresh, _ := k.replica(nil)
	d := registryData{Version: 1, Denied: part.Denied}
	d.fill()
	if err := d.validate(); err != nil {
		t.Fatal(err)
	}
	res, err := fresh.restore(&d, restoreReplace)
	if err != nil || res.Added[kindDeny] != 2 {
		t.Fatalf("restore: %+v, %v; want 2 deny entries added", res, err)
	}
	if _, denied := fresh.Denies("10.0.0.9_gone", ""); !denied {
		t.Error("the restored registry does not deny 10.0.0.9_gone")
	}
	again, _ := k.replica(nil)
	if _, _, n := again.DeniedAfter("", 10); n != 2 {
		t.Errorf("a replica opened after the restore loads %d deny entries, want 2", n)
	}
}
