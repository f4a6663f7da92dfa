package controlsvc

import (
	"fmt"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// TestAuditFoldsRefusals: a machine refused again and again within the
// window is one record written at once and one record counting the
// repeats, written when the window ends, on a change of key or reason,
// or at close; another name is never folded into it. The clock is
// injected: the window ends when the test says.
func TestAuditFoldsRefusals(t *testing.T) {
	t0 := time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := t0
	a, _, _, _ := startAuditLog(t, 1000, func() time.Time { return clock })
	refuse := func(name, key, reason string) {
		a.refused(fleet.AuditRecord{Kind: fleet.AuditRefused, Name: name, Key: key, IP: "192.0.2.1", Reason: reason})
	}
	at := func(d time.Duration) { clock = t0.Add(d) }
	for i := range 5 { // every 2 s, the first at t0
		at(time.Duration(2*i) * time.Second)
		refuse("10.0.0.9_gone", "UKEY1", "not in the registry")
	}
	at(9 * time.Second)
	refuse("10.0.0.8_other", "UKEY2", "not in the registry") // another name: its own record
	at(10 * time.Second)
	refuse("10.0.0.9_gone", "UKEY1", "denied") // a change: the repeats are written, then this
	at(11 * time.Second)
	refuse("10.0.0.9_gone", "UKEY1", "denied")
	at(10*time.Second + auditFoldWindow) // the window of the second open record ends
	a.flushFolds(false)
	refuse("10.0.0.9_gone", "UKEY1", "denied") // a new window: written at once
	refuse("10.0.0.9_gone", "UKEY1", "denied")
	a.start()
	a.close() // writes what is still open

	got, err := a.query(t.Context(), fleet.AuditRequest{Logs: []string{fleet.AuditLogRefused}})
	if err != nil {
		t.Fatal(err)
	}
	type rec struct {
		name, reason string
		count        int
		first, time  time.Duration
	}
	want := []rec{
		{"10.0.0.9_gone", "not in the registry", 0, 0, 0},
		{"10.0.0.8_other", "not in the registry", 0, 0, 9 * time.Second},
		{"10.0.0.9_gone", "not in the registry", 4, 2 * time.Second, 8 * time.Second},
		{"10.0.0.9_gone", "denied", 0, 0, 10 * time.Second},
		{"10.0.0.9_gone", "denied", 1, 11 * time.Second, 11 * time.Second},
		{"10.0.0.9_gone", "denied", 0, 0, 10*time.Second + auditFoldWindow},
		{"10.0.0.9_gone", "denied", 1, 10*time.Second + auditFoldWindow, 10*time.Second + auditFoldWindow},
	}
	if len(got.Records) != len(want) {
		for _, r := range got.Records {
			t.Logf("%s %s %q count %d first %v", r.Time.Sub(t0), r.Name, r.Reason, r.Count, r.FirstAt)
		}
		t.Fatalf("got %d records, want %d", len(got.Records), len(want))
	}
	for i, w := range want {
		r := got.Records[i]
		first := time.Duration(0)
		if !r.FirstAt.IsZero() {
			first = r.FirstAt.Sub(t0)
		}
		if r.Name != w.name || r.Reason != w.reason || r.Count != w.count || first != w.first || r.Time.Sub(t0) != w.time {
			t.Errorf("record %d: %s %q count %d first %v at %v; want %+v", i, r.Name, r.Reason, r.Count, first, r.Time.Sub(t0), w)
		}
	}
}

// TestAuditNewest: a Newest request answers the newest records of every
// log merged, oldest first, and says whether older ones match (More),
// within Since.
func TestAuditNewest(t *testing.T) {
	t0 := time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := t0
	a, _, _, _ := startAuditLog(t, 1000, func() time.Time { return clock })
	for i := range 30 {
		clock = t0.Add(time.Duration(i) * time.Second)
		if i%10 == 9 {
			a.record(fleet.AuditRecord{Kind: fleet.AuditRegistry, Op: fleet.OpMachinesDeny, Operator: "admin"})
			continue
		}
		a.refused(fleet.AuditRecord{Kind: fleet.AuditRefused, Name: fmt.Sprintf("10.0.0.%d_m", i), Key: "UKEY", Reason: "not in the registry"})
	}
	a.start()
	a.close()
	secs := func(l fleet.AuditList) []int {
		var out []int
		for _, r := range l.Records {
			out = append(out, int(r.Time.Sub(t0)/time.Second))
		}
		return out
	}
	for _, tt := range []struct {
		req  fleet.AuditRequest
		want []int
		more bool
	}{
		{fleet.AuditRequest{Newest: true, Limit: 4}, []int{26, 27, 28, 29}, true},
		{fleet.AuditRequest{Newest: true, Limit: 3, Logs: []string{fleet.AuditLogChanges}}, []int{9, 19, 29}, false},
		{fleet.AuditRequest{Newest: true, Limit: 2, Logs: []string{fleet.AuditLogChanges}}, []int{19, 29}, true},
		{fleet.AuditRequest{Newest: true, Limit: 5, Since: t0.Add(26 * time.Second)}, []int{26, 27, 28, 29}, false},
		{fleet.AuditRequest{Newest: true, Limit: 4, Since: t0.Add(26 * time.Second)}, []int{26, 27, 28, 29}, false},
		{fleet.AuditRequest{Newest: true, Limit: 3, Since: t0.Add(26 * time.Second)}, []int{27, 28, 29}, true},
	} {
		got, err := a.query(t.Context(), tt.req)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(secs(got)) != fmt.Sprint(tt.want) || got.More != tt.more {
			t.Errorf("%+v: got %v more %v, want %v more %v", tt.req, secs(got), got.More, tt.want, tt.more)
		}
	}
}
