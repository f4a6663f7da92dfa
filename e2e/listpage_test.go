package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// TestListsPagedAtScale: 50,000 registered and 10,000 pending machines
// (built in the registry directly, for speed) are listed through the real
// control API on a real broker. Before, one reply carried the whole list:
// past ~6,000 machines it exceeded the broker's 1 MiB payload limit and
// machines ls / pending timed out for everyone. Now every reply is a page
// within the limit and the SDK follows the pages.
func TestListsPagedAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 60,000-machine registry")
	}
	svc := startControl(t, "")
	reg := svc.Registry()
	const registered, pending = 50000, controlsvc.MaxPending
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	reqs := make([]fleet.MachineRequest, registered)
	for i := range reqs {
		reqs[i] = fleet.MachineRequest{ID: fmt.Sprintf("10.%d.%d.%d_node%05d", i>>16, (i>>8)&255, i&255, i), Key: pub,
			Labels: map[string]string{"role": "web", "location": "New-Jersey", "rack": fmt.Sprint(i % 40)}}
	}
	if _, err := reg.AddMachines(reqs, "test"); err != nil {
		t.Fatal(err)
	}
	for i := range pending {
		reg.RecordPendingAt(fmt.Sprintf("stranger%05d", i), pub, "192.0.2.1", "", "not in the registry")
	}
	// Some pending ids carry several keys: the largest entries.
	for i := range 500 {
		for range fleet.MaxPendingKeys {
			k, _ := nkeys.CreateUser()
			p, _ := k.PublicKey()
			reg.RecordPendingAt(fmt.Sprintf("stranger%05d", i), p, "192.0.2.2", "", "not in the registry")
		}
	}

	admin := adminClient(t, svc)
	maxPayload := int(admin.Conn().MaxPayload())

	// One raw page: within the broker's limit, and it names the next.
	nc := admin.Conn()
	for _, op := range []string{fleet.OpMachinesList, fleet.OpMachinesPending} {
		w, err := admin.WhoAmI(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		m, err := nc.Request(fleet.CtlSubject(w.Key, op), nil, 10*time.Second)
		if err != nil {
			t.Fatalf("%s first page: %v", op, err)
		}
		var page fleet.ListPage
		if err := json.Unmarshal(m.Data, &page); err != nil {
			t.Fatal(err)
		}
		if len(m.Data) > maxPayload || page.Next == "" {
			t.Fatalf("%s first page: %d bytes (limit %d), next %q; want a page within the limit naming the next", op, len(m.Data), maxPayload, page.Next)
		}
	}

	// A bound, not a timing: under -race JSON encoding is ~14x slower and
	// 60,000 entries take seconds on a loaded 2-core machine (0.7 s
	// without -race).
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	ms, err := admin.Machines(ctx)
	if err != nil {
		t.Fatalf("machines ls: %v", err)
	}
	if len(ms) != registered || !sort.SliceIsSorted(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID }) || !unique(ms, func(m fleet.Machine) string { return m.ID }) {
		t.Fatalf("machines ls: got %d machines (sorted and unique?), want %d", len(ms), registered)
	}
	listed := time.Since(start)
	ps, err := admin.PendingMachines(ctx)
	if err != nil {
		t.Fatalf("machines pending: %v", err)
	}
	t.Logf("listed %d machines in %v, %d pending in %v", len(ms), listed, len(ps), time.Since(start)-listed)
	if len(ps) != pending || !unique(ps, func(p fleet.Pending) string { return p.ID }) {
		t.Fatalf("machines pending: got %d, want %d", len(ps), pending)
	}
	if p := ps[0]; len(p.Keys) != fleet.MaxPendingKeys || p.KeysDropped != 1 || !p.MultipleKeys {
		t.Fatalf("pending %s: %d keys, %d dropped; want %d kept, 1 dropped, flagged", p.ID, len(p.Keys), p.KeysDropped, fleet.MaxPendingKeys)
	}
	ops, err := admin.Operators(ctx)
	if err != nil || len(ops) != 1 {
		t.Fatalf("operators ls: got %d, %v", len(ops), err)
	}
}

func unique[T any](items []T, key func(T) string) bool {
	seen := make(map[string]bool, len(items))
	for _, it := range items {
		if seen[key(it)] {
			return false
		}
		seen[key(it)] = true
	}
	return true
}
