package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestThreatPendingChurnGrowsRegistryBucket: anyone who reaches the
// client port may make up machine ids; each is recorded as pending and
// written to the registry bucket, and past MaxPending (10,000) the oldest
// is dropped and deleted from the bucket with a delete marker kept an
// hour. The bucket has no size limit, so the stream of cc_registry — the
// registry every replica loads (within a minute, or it does not start)
// and watches, in the JetStream the audit's space was checked for —
// grows by one message per made-up id: at the callout's rate (thousands
// a second) millions an hour, with no credential at all. Here 12,500
// made-up ids: the bucket must hold no more than the bounded pending
// list and the registry itself (plus a margin), not one message per
// stranger.
func TestThreatPendingChurnGrowsRegistryBucket(t *testing.T) {
	if testing.Short() {
		t.Skip("12,500 refused connections")
	}
	svc := startControl(t, "")
	const attempts = controlsvc.MaxPending + 2500
	var next, refused atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > attempts {
					return
				}
				nc, err := stacktest.Dial(svc.ClientURL(), stacktest.NewKey(t), fmt.Sprintf("10.66.%d.%d_junk%d", i/250, i%250, i))
				if err == nil {
					nc.Close()
					continue
				}
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if refused.Load() != attempts {
		t.Fatalf("%d of %d made-up machines were refused", refused.Load(), attempts)
	}
	stream := registryStream(t, svc)
	bound := uint64(controlsvc.MaxPending + 500)
	deadline := time.Now().Add(10 * time.Second) // the pending flush runs every 200 ms
	var msgs uint64
	for time.Now().Before(deadline) {
		info, err := stream.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		msgs = info.State.Msgs
		if msgs > bound {
			t.Fatalf("after %d made-up machine ids the registry bucket's stream holds %d messages (%d bytes), more than the "+
				"pending list's %d: every id dropped from the list leaves a delete marker for an hour and the bucket has no size limit; "+
				"keep pending entries where their number is bounded (their own bucket with MaxMsgs, or per-entry TTLs and no markers)",
				attempts, msgs, info.State.Bytes, controlsvc.MaxPending)
		}
		time.Sleep(200 * time.Millisecond) // poll the stream until the deadline
	}
	t.Logf("registry bucket: %d messages after %d made-up ids", msgs, attempts)
}

// registryStream is the registry bucket's stream, read with the control
// service's own CONTROL user.
func registryStream(t *testing.T, svc *controlsvc.Service) jetstream.Stream {
	t.Helper()
	kp := svc.Keys().Control
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(svc.ClientURL(), nats.Nkey(pub, kp.Sign), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), "KV_"+controlsvc.RegistryBucket)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
