package e2e

import (
	"bufio"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// limitedRequests reads cc_requests_limited_total for limit from svc's
// /metrics (served in process, no socket).
func limitedRequests(t *testing.T, svc *controlsvc.Service, limit string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	svc.HTTPHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	want := `cc_requests_limited_total{limit="` + limit + `"} `
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("metric line %q: %v", sc.Text(), err)
			}
			return n
		}
	}
	return 0
}

// TestThreatLegacySnapshotSharedBucket (review 2, F6): the unattributed
// presence.snapshot subject does not say who asks, only whose control
// inbox to answer, which the sender picks. A viewer naming the admin's
// and other operators' inboxes there used to spend each one's bucket in
// turn: as many snapshots as operators × burst, and the admin's legacy
// snapshots refused. Now the subject has one bucket of its own, shared by
// every sender (best effort): the flood costs one burst of snapshots
// however many inboxes it names, and every operator's own
// ctl.<key>.presence.snapshot, with its own bucket, is answered.
func TestThreatLegacySnapshotSharedBucket(t *testing.T) {
	const burst, victims, each = 5, 4, 20
	svc := startLimitedControl(t, burst)
	stacktest.StartAgent(t, svc, "10.0.4.1_legacy", nil)
	stacktest.WaitFor(t, "agent online", 5*time.Second, func() bool { return stacktest.Online(svc, "10.0.4.1_legacy") })

	adminKP, err := nkeys.FromSeed(stacktest.AdminSeed(t, svc))
	if err != nil {
		t.Fatal(err)
	}
	keys := []nkeys.KeyPair{adminKP}
	for i := range victims - 1 {
		kp := stacktest.Key(t, "viewer:victim"+strconv.Itoa(i))
		stacktest.AddOperator(t, svc, "victim"+strconv.Itoa(i), fleet.RoleViewer, kp)
		keys = append(keys, kp)
	}
	// Each victim reads its own control inbox: count the snapshots and
	// refusals the flood sends there.
	var snapshots, refusals atomic.Int64
	var refusal atomic.Value
	for i, kp := range keys {
		nc := stacktest.Connect(t, svc.ClientURL(), kp, "victim-reader"+strconv.Itoa(i))
		if _, err := nc.Subscribe(fleet.ControlInbox(stacktest.Pub(t, kp))+".flood.>", func(m *nats.Msg) {
			if errorCode(m) == 0 {
				snapshots.Add(1)
			} else if errorCode(m) == fleet.CodeTooManyRequests {
				refusals.Add(1)
				refusal.Store(m.Header.Get(fleet.HeaderError))
			}
		}); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	flooderKP := stacktest.Key(t, "viewer:legacy-flooder")
	stacktest.AddOperator(t, svc, "legacy-flooder", fleet.RoleViewer, flooderKP)
	flooder := stacktest.Connect(t, svc.ClientURL(), flooderKP, "legacy-flooder")
	for i := range victims * each {
		reply := fleet.ControlInbox(stacktest.Pub(t, keys[i%victims])) + ".flood." + strconv.Itoa(i)
		if err := flooder.PublishRequest(fleet.PresenceSnapshotSubject, reply, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := flooder.Flush(); err != nil {
		t.Fatal(err)
	}
	// Every request is either refused (counted in the metric) or answered
	// with a snapshot: wait until all are accounted for.
	stacktest.WaitFor(t, "every flood request refused or answered", 10*time.Second, func() bool {
		return limitedRequests(t, svc, "presence snapshot")+int(snapshots.Load()) == victims*each
	})
	t.Logf("%d legacy requests naming %d operators' inboxes: %d snapshots sent, %d refusals answered, %d refused in all",
		victims*each, victims, snapshots.Load(), refusals.Load(), limitedRequests(t, svc, "presence snapshot"))
	if n := snapshots.Load(); n > burst {
		t.Fatalf("the flood drew %d snapshots, want at most one shared burst (%d) whatever inboxes it names", n, burst)
	}
	// Every operator's own subject has its own bucket, untouched.
	for i, kp := range keys {
		c, err := bench.Connect(svc.ClientURL(), bench.WithSeed(stacktest.Seed(t, kp)))
		if err != nil {
			t.Fatal(err)
		}
		snap, err := c.Snapshot(t.Context())
		c.Close()
		if err != nil || len(snap.Servers) != 1 {
			t.Fatalf("operator %d's own snapshot after the legacy flood: %v (%v)", i, err, snap)
		}
	}
	// The refusals answered say the limit is shared and where to ask.
	if d, _ := refusal.Load().(string); refusals.Load() == 0 || !strings.Contains(d, "shared by everyone") {
		t.Fatalf("%d refusals answered, the last %q: want 429s saying the limit is shared", refusals.Load(), d)
	}
}
