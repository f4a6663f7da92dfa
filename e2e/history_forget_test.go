package e2e

import (
	"context"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestRemovedMachineForgotten: a machine removed from the registry and
// added again (a host rebuilt, the id reused) is "never seen" until it
// connects: not shown the old machine's OFFLINE time, and the old
// last-seen record is gone from the store.
func TestRemovedMachineForgotten(t *testing.T) {
	svc := startControl(t, "")
	viewer := newOperator(t, svc, "viewer", fleet.RoleViewer)
	admin := adminBench(t, svc)
	const id = "10.0.0.7_rebuilt"
	a := startAgent(t, svc, id, true)
	stacktest.WaitOnline(t, svc, id)
	a.Close()
	stacktest.WaitFor(t, "the machine OFFLINE with a last-seen", 10*time.Second, func() bool {
		m := machinesOf(t, svc.ClientURL(), viewer)[id]
		return !m.Online && m.Seen != nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := admin.RemoveMachine(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddMachine(ctx, id, stacktest.Pub(t, stacktest.NewKey(t)), nil); err != nil {
		t.Fatal(err)
	}
	if m := machinesOf(t, svc.ClientURL(), viewer)[id]; m.Seen != nil {
		t.Fatalf("the re-added machine shows the removed one's last-seen: %+v", *m.Seen)
	}
	kp := svc.Keys().Control
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(svc.ClientURL(), nats.Nkey(pub, kp.Sign))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, controlsvc.LastSeenBucket)
	if err != nil {
		t.Fatal(err)
	}
	key := "machine." + base64.RawURLEncoding.EncodeToString([]byte(id))
	stacktest.WaitFor(t, "the removed machine's last-seen record deleted", 10*time.Second, func() bool {
		_, err := kv.Get(ctx, key)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
}
