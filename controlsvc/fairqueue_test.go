package controlsvc

import "testing"

// TestFairQueueTakesTurns: an owner with many items queued delays
// another's one item by one item, not by all of its own; an owner's queue
// is bounded; close ends every pop.
func TestFairQueueTakesTurns(t *testing.T) {
	q := newFairQueue(3)
	for _, it := range []string{"f1", "f2", "f3"} {
		if !q.push("flooder", it) {
			t.Fatalf("push %s refused", it)
		}
	}
	if q.push("flooder", "f4") {
		t.Fatal("a fourth item queued past the bound of 3")
	}
	if !q.push("admin", "a1") {
		t.Fatal("another owner refused because of the flooder")
	}
	var got []string
	for range 4 {
		it, ok := q.pop()
		if !ok {
			t.Fatal("pop ended early")
		}
		got = append(got, it)
	}
	if want := []string{"f1", "a1", "f2", "f3"}; !equalStrings(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	done := make(chan bool)
	go func() { _, ok := q.pop(); done <- ok }()
	q.close()
	if <-done {
		t.Fatal("pop after close returned an item")
	}
	if q.push("admin", "a2") {
		t.Fatal("push after close accepted")
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
