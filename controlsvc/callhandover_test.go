package controlsvc

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// handoverFixture is a call handover on a clock the test moves, with
// this replica's publishing switched by the test, collecting what it
// writes and notes as lost.
type handoverFixture struct {
	h       *callHandover
	clock   time.Time
	leading atomic.Bool
	wrote   []string // functions of the records written
	lost    []string
}

func newHandoverFixture(t *testing.T) *handoverFixture {
	t.Helper()
	f := &handoverFixture{clock: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	f.h = newCallHandover(func() time.Time { return f.clock }, f.leading.Load, time.Minute,
		func(_ string, rec fleet.AuditRecord) { f.wrote = append(f.wrote, rec.Function) },
		func(n int, first, last time.Time, why string) {
			f.lost = append(f.lost, strings.Repeat("x", n)+" "+first.Format(time.TimeOnly)+"-"+last.Format(time.TimeOnly)+" "+why)
		})
	return f
}

func (f *handoverFixture) call(key, fn string) {
	f.h.record(key, fleet.AuditRecord{Kind: fleet.AuditCall, Function: fn, Time: f.clock,
		Outcomes: []fleet.AuditOutcome{{Machine: "m", Status: fleet.OutcomeOK}}})
}

func (f *handoverFixture) advance(d time.Duration) {
	f.clock = f.clock.Add(d)
	f.h.tick()
}

// TestCallHandoverRecordsTheGapOnce: a replica that is not the presence
// publisher keeps the calls it matched and drops each once it sees the
// publisher record it (whichever comes first); the calls made while
// nobody published, it records once it has been the publisher for a
// moment; a call the old publisher recorded as it closed, it does not
// record again when its own match of it ends. Nothing is written twice.
func TestCallHandoverRecordsTheGapOnce(t *testing.T) {
	f := newHandoverFixture(t)
	// A publishes: B matched "before" and sees A write it, in both orders.
	f.call("k1", "before")
	f.h.written(callKey("k1"))
	f.h.written(callKey("k2"))
	f.call("k2", "before too")
	f.advance(time.Second)
	// A gives the lease up; the call made now is recorded by nobody yet.
	// A recorded "open" as it closed, while B's match of it goes on.
	f.h.written(callKey("k4"))
	f.call("k3", "during")
	f.advance(time.Second)
	if len(f.wrote) != 0 {
		t.Fatalf("a replica that is not the publisher wrote %v", f.wrote)
	}
	// B takes over: it writes what it kept after the settling time.
	f.leading.Store(true)
	f.advance(100 * time.Millisecond)
	if len(f.wrote) != 0 {
		t.Fatalf("wrote %v at once on taking over: the old publisher's last records may be on their way", f.wrote)
	}
	f.advance(handoverSettle)
	f.call("k4", "open")  // recorded by A: not again
	f.call("k5", "after") // B's own
	f.advance(time.Second)
	if got := strings.Join(f.wrote, ","); got != "during,after" {
		t.Fatalf("written %q, want during,after: each call once", got)
	}
	if len(f.lost) != 0 {
		t.Errorf("noted lost: %v", f.lost)
	}
}

// TestCallHandoverNotesWhatItGaveUp: a record kept for longer than the
// handover keeps anything (the publisher never wrote it) and those
// pushed out past the bounds are noted as lost, with their span, when
// the replica takes over; a key seen written long ago matches nothing
// new (a later call with the same key is written).
func TestCallHandoverNotesWhatItGaveUp(t *testing.T) {
	f := newHandoverFixture(t)
	f.call("k1", "never written")
	f.h.written(callKey("k9")) // a call this replica never matched
	f.advance(2 * time.Minute)
	f.leading.Store(true)
	f.advance(time.Second)
	f.advance(time.Second)
	if len(f.lost) != 1 || !strings.HasPrefix(f.lost[0], "x 12:00:00-12:02:00 ") || !strings.Contains(f.lost[0], "never saw them recorded") {
		t.Fatalf("noted lost %q, want one record from 12:00:00 to 12:02:00 and why", f.lost)
	}
	f.call("k9", "same key, much later")
	if got := strings.Join(f.wrote, ","); got != "same key, much later" {
		t.Fatalf("written %q: a key seen written long ago swallowed a new call", got)
	}
	// Past the bounds the oldest records kept are given up, counted.
	f.leading.Store(false)
	f.advance(time.Second)
	f.wrote, f.lost = nil, nil
	for i := range handoverMaxRecords + 3 {
		f.call("b"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+time.Duration(i).String(), "bulk")
	}
	if f.h.live != handoverMaxRecords {
		t.Fatalf("kept %d records, want the bound %d", f.h.live, handoverMaxRecords)
	}
	f.leading.Store(true)
	f.advance(time.Second)
	f.advance(time.Second)
	if len(f.wrote) != handoverMaxRecords || len(f.lost) != 1 || !strings.HasPrefix(f.lost[0], "xxx ") {
		t.Fatalf("wrote %d, noted %d lost notes (%.40q); want %d written and a note of 3", len(f.wrote), len(f.lost), f.lost, handoverMaxRecords)
	}
}
