package controlsvc

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

func TestSplitCallRecord(t *testing.T) {
	rec := fleet.AuditRecord{Kind: fleet.AuditCall, Function: "f", Args: json.RawMessage(`{"a":1}`), OK: 1201, Targets: 1201}
	for i := range 1201 {
		rec.Outcomes = append(rec.Outcomes, fleet.AuditOutcome{Machine: fmt.Sprintf("m%04d", i), Status: fleet.OutcomeOK})
	}
	parts := splitCallRecord(rec)
	if len(parts) != 3 {
		t.Fatalf("got %d parts, want 3", len(parts))
	}
	n := 0
	for i, p := range parts {
		if p.Part != i+1 || p.Parts != 3 || p.OK != 1201 || len(p.Outcomes) > fleet.AuditMaxOutcomes {
			t.Fatalf("part %d: %+v", i, p)
		}
		if (i == 0) != (p.Args != nil) {
			t.Fatalf("part %d: args %s; want them on the first part only", i, p.Args)
		}
		n += len(p.Outcomes)
	}
	if n != 1201 {
		t.Fatalf("parts hold %d outcomes, want 1201", n)
	}
	if one := splitCallRecord(fleet.AuditRecord{Outcomes: rec.Outcomes[:3]}); len(one) != 1 || one[0].Parts != 0 {
		t.Fatalf("a small call was split: %+v", one)
	}
}

func TestTruncateJSON(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{`{"a":1}`, `{"a":1}`},
		{"not json", `"not json"`},
		{`{"a":"` + strings.Repeat("x", 20) + `"}`, `"{\"a\":\"xxxx…(truncated)"`},
	} {
		if got := string(truncateJSON([]byte(tc.in), 10)); got != tc.want && !(tc.in == `{"a":1}` && got == tc.in) {
			t.Errorf("truncateJSON(%q): got %s, want %s", tc.in, got, tc.want)
		}
		if tc.in != "" && !json.Valid(truncateJSON([]byte(tc.in), 10)) {
			t.Errorf("truncateJSON(%q) is not JSON", tc.in)
		}
	}
}

// startAuditLog opens an audit log on a real broker with JetStream (a
// temporary store) with per-log queues of queue records, not started.
func startAuditLog(t *testing.T, queue int, now func() time.Time) (*auditLog, *nats.Conn, *brokertest.Keys, *broker.Broker) {
	t.Helper()
	dir := t.TempDir()
	b, keys := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) { c.StoreDir = dir }))
	nc := brokertest.Connect(t, b, keys.Control)
	a := newAuditLog(nc, slog.New(slog.DiscardHandler), AuditConfig{})
	a.now = now
	for i := range a.queues {
		a.queues[i] = make(chan auditItem, queue)
	}
	if err := a.open(t.Context(), false, func() storeInfo { return storeInfo{} }); err != nil {
		t.Fatal(err)
	}
	return a, nc, keys, b
}

// TestAuditDropsAreRecorded (issue 10 finding 7, audit half): records the
// writer cannot keep up with are not lost silently: the changes log gets
// a record per operator and kind saying how many were lost, whose, from
// when to when, and the metric hook counts them. A full calls queue does
// not drop a registry change (each log has its own queue).
func TestAuditDropsAreRecorded(t *testing.T) {
	t0 := time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := t0
	a, _, _, _ := startAuditLog(t, 2, func() time.Time { return clock })
	var counted atomic.Int64
	a.onDrop = func(log string, n int) {
		if log == fleet.AuditLogCalls {
			counted.Add(int64(n))
		}
	}
	call := func(op string) {
		a.record(fleet.AuditRecord{Kind: fleet.AuditCall, Function: "f", Operator: op, OperatorKey: "U" + op})
	}
	call("viewer1")
	call("viewer1") // queue full from here
	call("viewer1")
	clock = t0.Add(time.Second)
	call("viewer2")
	call("viewer1")
	a.record(fleet.AuditRecord{Kind: fleet.AuditRegistry, Op: fleet.OpOperatorsAdd, Operator: "admin"})
	a.start()
	a.close()

	got, err := a.query(t.Context(), fleet.AuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	drops := map[string]fleet.AuditRecord{}
	var calls, adds int
	for _, r := range got.Records {
		switch r.Kind {
		case fleet.AuditDropped:
			if r.Log != fleet.AuditLogChanges {
				t.Errorf("drop note in the %s log, want changes", r.Log)
			}
			drops[r.Operator] = r
		case fleet.AuditCall:
			calls++
		case fleet.AuditRegistry:
			adds++
		}
	}
	if calls != 2 || adds != 1 {
		t.Fatalf("%d calls and %d registry changes stored, want 2 and 1: %+v", calls, adds, got.Records)
	}
	v1, v2 := drops["viewer1"], drops["viewer2"]
	if v1.Dropped != 2 || v1.OperatorKey != "Uviewer1" || v1.DroppedKind != fleet.AuditCall || !v1.DroppedSince.Equal(t0) || !v1.Time.Equal(t0.Add(time.Second)) {
		t.Errorf("viewer1's drop note: %+v", v1)
	}
	if v2.Dropped != 1 || !v2.DroppedSince.Equal(t0.Add(time.Second)) || !strings.Contains(v2.Reason, "fell behind") {
		t.Errorf("viewer2's drop note: %+v", v2)
	}
	if n := counted.Load(); n != 3 || a.dropped.Load() != 3 {
		t.Errorf("counted %d (metric) and %d lost, want 3", n, a.dropped.Load())
	}
}

// TestCallWatchSlowConsumerRecorded: when a subscription of the calls
// connection overflows (a real slow consumer), the event is counted,
// logged and noted in the audit.
func TestCallWatchSlowConsumerRecorded(t *testing.T) {
	a, _, keys, b := startAuditLog(t, 16, time.Now)
	var slow atomic.Int64
	a.onSlow = func() { slow.Add(1) }
	logs := &strings.Builder{}
	var mu sync.Mutex
	a.log = slog.New(slog.NewTextHandler(lockedWriter{&mu, logs}, nil))
	s := &Service{log: a.log, audit: a}
	nc := brokertest.Connect(t, b, keys.Fleet, nats.ErrorHandler(s.callsAsyncError))
	block := make(chan struct{})
	sub, err := nc.Subscribe(fleet.InboxesWildcard, func(*nats.Msg) { <-block })
	if err != nil {
		t.Fatal(err)
	}
	defer close(block)
	if err := sub.SetPendingLimits(2, -1); err != nil {
		t.Fatal(err)
	}
	pub := brokertest.Connect(t, b, keys.Calls)
	deadline := time.Now().Add(5 * time.Second)
	for slow.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no slow-consumer event")
		}
		_ = pub.Publish(fleet.CallReply("K", "m", "c", 0), []byte("x"))
		_ = pub.Flush()
	}
	a.start()
	a.close()
	got, err := a.query(t.Context(), fleet.AuditRequest{Logs: []string{fleet.AuditLogChanges}})
	if err != nil {
		t.Fatal(err)
	}
	var noted bool
	for _, r := range got.Records {
		noted = noted || (r.Kind == fleet.AuditDropped && r.DroppedKind == "slow-consumer" && r.Dropped >= 1 &&
			strings.Contains(r.Reason, "_INBOX_cc.>"))
	}
	mu.Lock()
	logged := logs.String()
	mu.Unlock()
	if !noted || !strings.Contains(logged, "slow consumer") || a.slowEvents.Load() < 1 {
		t.Fatalf("slow consumer not noted (%v), logged:\n%s\nrecords %+v", noted, logged, got.Records)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
