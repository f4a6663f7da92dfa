package e2e

import (
	"context"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestViewerHistoryBurstWaitsItsTurn: a viewer's burst of slow history
// requests that read little (one machine's entries, one in each of 50
// windows of the history: a hundred round trips each, charged a few
// tokens of the control limit), 1,000 at once as --control-burst allows,
// does not hold the history for anyone else: an operator's requests wait
// in their own queue, one answered at a time and another operator's
// next; past 16 waiting they are refused (429).
func TestViewerHistoryBurstWaitsItsTurn(t *testing.T) {
	const sparse = "10.0.0.2_sparse"
	svc := startControl(t, "")
	vpath := newOperator(t, svc, "vera", fleet.RoleViewer)
	admin := adminBench(t, svc)
	kp := svc.Keys().Control
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(svc.ClientURL(), nats.Nkey(pub, kp.Sign), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	// A machine with an entry in each of 50 windows of the history:
	// reading it newest first takes two round trips a window and reads
	// little, so its cost to the control limit is small.
	at := time.Now().UTC().Add(-time.Hour)
	for range 50 {
		at = fillHistory(t, js, "10.0.0.1_quiet", 999, at)
		at = fillHistory(t, js, sparse, 1, at)
	}

	vkp := stacktest.LoadKey(t, vpath)
	vpub := stacktest.Pub(t, vkp)
	vc, err := connectAs(svc.ClientURL(), vkp, "vera")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vc.Close)
	inbox := fleet.ControlInbox(vpub) + ".flood"
	var answered, refused atomic.Int64
	sub, err := vc.Subscribe(inbox, func(m *nats.Msg) {
		if code, _ := strconv.Atoi(m.Header.Get(fleet.HeaderErrorCode)); code == fleet.CodeTooManyRequests {
			refused.Add(1)
			return
		}
		answered.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(fleet.HistoryRequest{Machine: sparse, Newest: true, Limit: fleet.HistoryMaxLimit})
	const burst = 1000
	for range burst {
		if err := vc.PublishRequest(fleet.CtlSubject(vpub, fleet.OpHistory), inbox, req); err != nil {
			t.Fatal(err)
		}
	}
	if err := vc.Flush(); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitFor(t, "the viewer's first answer", 10*time.Second, func() bool {
		return answered.Load() > 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	var page fleet.HistoryPage
	if err := admin.Control(ctx, fleet.OpHistory, fleet.HistoryRequest{Newest: true, Limit: 10}, &page); err != nil {
		t.Fatalf("the admin's history request during a viewer's burst of %d: %v after %v", burst, err, time.Since(start).Round(time.Millisecond))
	}
	t.Logf("the admin's history answered in %v (%d entries)", time.Since(start), len(page.Entries))
	stacktest.WaitFor(t, "every request of the burst answered or refused", 60*time.Second, func() bool {
		return answered.Load()+refused.Load() == burst
	})
	t.Logf("of the viewer's %d: %d answered, %d refused (429)", burst, answered.Load(), refused.Load())
	if refused.Load() < burst/2 {
		t.Errorf("%d of the viewer's %d history requests refused, want most: an operator's waiting ones are bounded", refused.Load(), burst)
	}
}
