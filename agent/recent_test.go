package agent

import (
	"strconv"
	"testing"
)

func TestRecentCalls(t *testing.T) {
	r := newRecentCalls(3)
	for _, id := range []string{"a", "b", "c"} {
		if !r.first(id) {
			t.Fatalf("%s: seen before it was sent", id)
		}
	}
	if r.first("b") {
		t.Fatal("b: a repeat ran again")
	}
	// A fourth id pushes out the oldest; memory stays at three.
	if !r.first("d") || !r.first("a") || len(r.seen) != 3 {
		t.Fatalf("after eviction: seen %v", r.seen)
	}
	if r.first("d") {
		t.Fatal("d: a repeat ran again after the ring turned")
	}
}

// BenchmarkRecentCalls: the per-call cost of catching re-sent copies, with
// the ring full (every call evicts one id).
func BenchmarkRecentCalls(b *testing.B) {
	r := newRecentCalls(recentCallIDs)
	ids := make([]string, 4*recentCallIDs)
	for i := range ids {
		ids[i] = "UOPERATORKEY " + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.first(ids[i%len(ids)])
		i++
	}
}
