package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
)

// Review of issue #15 (registry export/import, cc-bench registry import):
// what an import may write that the registry's own operations refuse.

// adminBench connects to svc as its first admin, through the SDK.
func adminBench(t *testing.T, svc *controlsvc.Service) *bench.Client {
	t.Helper()
	return benchAs(t, svc, stacktest.WriteSeed(t, "admin", stacktest.AdminSeed(t, svc)))
}

// benchAs connects to svc with the operator seed in path, through the SDK.
func benchAs(t *testing.T, svc *controlsvc.Service, path string) *bench.Client {
	t.Helper()
	c, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestThreatRegistryImportReusesOperatorKey: `operators add` refuses a key
// that belongs to another operator, and `machines add/import` one that
// belongs to an operator, because the callout and the control API find an
// operator by its key (OperatorByKey: the first in map order). The
// registry import writes an entry it does not hold yet without either
// check, so restoring an old backup (or any part) that names viewer
// vera's key under an admin "vera-old" gives vera's key two operators,
// and vera is an admin whenever the lookup meets "vera-old" first: she
// adds an admin of her own. The import must be refused (409) as
// operators.add is.
func TestThreatRegistryImportReusesOperatorKey(t *testing.T) {
	svc := startControl(t, "")
	veraPath := newOperator(t, svc, "vera", fleet.RoleViewer)
	vera, _ := svc.Registry().Operator("vera")
	admin := adminBench(t, svc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("operator", func(t *testing.T) {
		part := fleet.RegistryPart{Operators: map[string]*fleet.Operator{
			"vera-old": {Name: "vera-old", Key: vera.Key, Role: fleet.RoleAdmin, AddedAt: time.Now().UTC()},
		}}
		_, err := admin.RegistryImport(ctx, part, nil)
		var fe *fleet.Error
		if errors.As(err, &fe) && fe.Code == fleet.CodeConflict {
			return // refused, as operators add refuses it
		}
		// Accepted: show what it gives the viewer.
		vc := benchAs(t, svc, veraPath)
		for i := range 200 {
			_, aerr := vc.AddOperator(ctx, fmt.Sprintf("eve%d", i), stacktest.Pub(t, stacktest.NewKey(t)), fleet.RoleAdmin)
			if aerr == nil {
				t.Fatalf("the import of an admin with viewer vera's key was accepted (err %v), and vera (a viewer) then added "+
					"an admin of her own on try %d: import must refuse a key another operator holds, as operators.add does", err, i+1)
			}
		}
		t.Fatalf("the import of an admin operator with viewer vera's key was accepted (err %v): two operators share one key", err)
	})

	t.Run("machine", func(t *testing.T) {
		const id = "10.0.0.9_shared"
		part := fleet.RegistryPart{Machines: map[string]*fleet.Machine{
			id: {ID: id, Key: vera.Key, AddedAt: time.Now().UTC()},
		}}
		_, err := admin.RegistryImport(ctx, part, nil)
		var fe *fleet.Error
		if !errors.As(err, &fe) || fe.Code != fleet.CodeConflict {
			t.Fatalf("the import of machine %s with operator vera's key: got %v, want 409 as machines.import answers", id, err)
		}
	})
}

// TestThreatRegistryImportUncheckedPending: pending entries come only
// from refused connection attempts, each key a real nkey that signed a
// nonce; the import takes any pending entry that is not null. A pending
// entry whose key is no public nkey is written, and `machines accept`
// then registers the machine with that key, which every other replica's
// bucket watcher and this one's next start refuse as malformed: the
// replicas disagree on the registry and the machine disappears at the
// next restart. A pending entry naming another id (which the bucket's
// decoder refuses) is written too. Both must be refused as a registry
// file's malformed entries are.
func TestThreatRegistryImportUncheckedPending(t *testing.T) {
	svc := startControl(t, "")
	admin := adminBench(t, svc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := time.Now().UTC()
	for _, tc := range []struct {
		name string
		id   string
		p    fleet.Pending
	}{
		{"a key that is no nkey", "10.0.0.7_p1", fleet.Pending{ID: "10.0.0.7_p1", Key: "not-a-key", FirstSeen: now, LastSeen: now, Attempts: 1,
			Keys: []fleet.PendingKey{{Key: "not-a-key", FirstSeen: now, LastSeen: now, Attempts: 1}}}},
		{"another id inside", "10.0.0.7_p2", fleet.Pending{ID: "10.0.0.7_other", Key: stacktest.Pub(t, stacktest.NewKey(t)), FirstSeen: now, LastSeen: now, Attempts: 1}},
		{"an id no machine may have", "no spaces allowed", fleet.Pending{ID: "no spaces allowed", Key: stacktest.Pub(t, stacktest.NewKey(t)), FirstSeen: now, LastSeen: now, Attempts: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			_, err := admin.RegistryImport(ctx, fleet.RegistryPart{Pending: map[string]*fleet.Pending{tc.id: &p}}, nil)
			var fe *fleet.Error
			if errors.As(err, &fe) && fe.Code == fleet.CodeBadRequest {
				return
			}
			msg := fmt.Sprintf("import of a malformed pending entry (%s): got %v, want 400", tc.name, err)
			if _, aerr := admin.AcceptMachine(ctx, tc.id, ""); aerr == nil {
				m, _ := svc.Registry().Machine(tc.id)
				msg += fmt.Sprintf("; machines accept then registered %s with key %q", tc.id, m.Key)
			}
			t.Fatal(msg)
		})
	}
}

// TestThreatRegistryImportAuditNamesOperators: an import is audited as
// its request body, cut to 4 KiB; the reply and the audit say only how
// many entries of each kind were added or changed. An admin operator
// added (or a viewer made admin) by an import of a few hundred machines
// is named nowhere in the audit: the changes log must name the operators
// an import added or changed, and their roles, as operators.add's
// record does.
func TestThreatRegistryImportAuditNamesOperators(t *testing.T) {
	svc := startControl(t, "")
	admin := adminBench(t, svc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now().Add(-time.Minute)
	part := fleet.RegistryPart{Machines: map[string]*fleet.Machine{}, Operators: map[string]*fleet.Operator{
		"mallory": {Name: "mallory", Key: stacktest.Pub(t, stacktest.NewKey(t)), Role: fleet.RoleAdmin, AddedAt: time.Now().UTC()},
	}}
	for i := range 100 {
		id := fmt.Sprintf("10.1.0.%d_m%03d", i, i)
		part.Machines[id] = &fleet.Machine{ID: id, Key: stacktest.Pub(t, stacktest.NewKey(t)), AddedAt: time.Now().UTC()}
	}
	res, err := admin.RegistryImport(ctx, part, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Added["operators"] != 1 {
		t.Fatalf("import result %+v: want one operator added", res)
	}
	var recs []fleet.AuditRecord
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs, err = admin.Audit(ctx, start, 1000)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range recs {
			if r.Op == fleet.OpRegistryImport {
				n++
			}
		}
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // poll the audit for the record
	}
	found := false
	for _, r := range recs {
		if r.Op != fleet.OpRegistryImport {
			continue
		}
		found = true
		if strings.Contains(r.Note, "mallory") || strings.Contains(string(r.Request), `"mallory"`) {
			return
		}
	}
	if !found {
		t.Fatal("no audit record of the registry import")
	}
	t.Fatal("the audit of a registry import that added admin operator mallory does not name mallory " +
		"(the request is cut to 4 KiB, the note is empty): an admin added by import is hidden in the audit")
}

// TestImportHoldsPresence: machines.import and registry.import run with
// presence's admission lock held (so no connect event slips between the
// change and the kick of re-keyed connections). With the registry file
// that was one write; in the bucket it is one compare-and-set round trip
// per entry, so presence handles no connect event for the whole import:
// a machine that connects meanwhile is not ONLINE, and a direct call to
// it is answered "no responders" by the control service, until the
// import ends (each entry a replicated write: seconds for a few thousand
// on a three-broker cluster). Only the re-keyed machines'
// connections need the lock: a machine connecting during an import must
// be ONLINE within a second.
func TestImportHoldsPresence(t *testing.T) {
	// A three-broker JetStream cluster: the bucket is R3, as deployed.
	dir := t.TempDir()
	bs, _ := startJetStreamCluster(t, dir, 3, nil)
	svc := startReplica(t, dir, bs[0].ClientURL(), "A")
	admin := adminBench(t, svc)
	const n = 9000 // one request under the 1 MiB payload limit
	reqs := make([]fleet.MachineRequest, n)
	for i := range reqs {
		reqs[i] = fleet.MachineRequest{ID: fmt.Sprintf("10.2.%d.%d_imp", i/250, i%250), Key: stacktest.Pub(t, stacktest.NewKey(t))}
	}
	const id = "10.3.0.1_joiner"
	kp := stacktest.NewKey(t)
	stacktest.RegisterKey(t, svc, id, stacktest.Pub(t, kp), nil)

	done := make(chan time.Time, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var res fleet.ImportResult
		if err := admin.Control(ctx, fleet.OpMachinesImport, fleet.MachineImport{Machines: reqs}, &res); err != nil {
			t.Error(err)
		}
		done <- time.Now()
	}()
	stacktest.WaitFor(t, "the import to be under way", 10*time.Second, func() bool {
		_, ok := svc.Registry().Machine(reqs[0].ID)
		return ok
	})
	connected := time.Now()
	nc, err := stacktest.Dial(svc.ClientURL(), kp, id)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	stacktest.WaitFor(t, "the machine ONLINE", 60*time.Second, func() bool { return stacktest.Online(svc, id) })
	online := time.Now()
	var finished time.Time
	select {
	case finished = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the import did not end")
	}
	t.Logf("ONLINE %v after connecting; the import ended %v after the connection", online.Sub(connected), finished.Sub(connected))
	if online.Sub(connected) > time.Second {
		t.Fatalf("a machine connected during an import of %d machines was ONLINE only %v later (the import ended %v after it connected): "+
			"the import holds presence's admission lock for every entry's write", n, online.Sub(connected).Round(time.Millisecond),
			finished.Sub(connected).Round(time.Millisecond))
	}
}

// TestThreatRegistryImportLongIDKillsControlConnection: the import checks
// pending entries for nothing but null, so their ids may be anything. A
// pending id of 5,000 characters is a bucket key (and a subject) longer
// than the broker's control line: the broker closes the control
// service's CONTROL connection, the one its auth callout, registry,
// audit and history use, and the service does not get it back — every
// later registry write fails ("nats: connection closed") and nobody new
// is admitted, until cc-control restarts. One import request (an admin's
// restore of a damaged or doctored backup) must be refused with a 400,
// and the service must keep admitting.
func TestThreatRegistryImportLongIDKillsControlConnection(t *testing.T) {
	svc := startControl(t, "")
	admin := adminBench(t, svc)
	opKey := stacktest.NewKey(t)
	stacktest.AddOperator(t, svc, "later", fleet.RoleViewer, opKey)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := strings.Repeat("a", 5000)
	now := time.Now().UTC()
	_, importErr := admin.RegistryImport(ctx, fleet.RegistryPart{Pending: map[string]*fleet.Pending{
		id: {ID: id, Key: stacktest.Pub(t, stacktest.NewKey(t)), FirstSeen: now, LastSeen: now, Attempts: 1}}}, nil)
	var fe *fleet.Error
	refused := errors.As(importErr, &fe) && fe.Code == fleet.CodeBadRequest

	// Afterwards: a registry write, and a registered operator's connection.
	var writeErr, connErr error
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, writeErr = svc.Registry().AddOperator("after", stacktest.Pub(t, stacktest.NewKey(t)), fleet.RoleViewer)
		var nc *nats.Conn
		if nc, connErr = stacktest.Dial(svc.ClientURL(), opKey, "later"); connErr == nil {
			nc.Close()
		}
		if writeErr == nil && connErr == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // poll until the service recovers or the deadline
	}
	if !refused || writeErr != nil || connErr != nil {
		msg := fmt.Sprintf("%.160v", importErr)
		t.Fatalf("an import of a pending entry with a 5,000-character id: refused with 400 %v (got %s); 5 s later a registry write: %v; "+
			"a registered operator's connection: %v", refused, msg, writeErr, connErr)
	}
}
