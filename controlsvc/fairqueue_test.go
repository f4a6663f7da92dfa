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

// TestFairQueueBusyBound: with busy 1 an owner has one item handed out
// at a time: its next waits until that one is done, while another
// owner's is handed out at once.
func TestFairQueueBusyBound(t *testing.T) {
	q := newFairQueueOf[int](4, 1)
	for i := range 3 {
		q.push("flooder", i)
	}
	it, owner, ok := q.popOwner()
	if !ok || it != 0 || owner != "flooder" {
		t.Fatalf("first: %d %q %v", it, owner, ok)
	}
	q.push("admin", 100)
	if it, owner, _ := q.popOwner(); it != 100 || owner != "admin" {
		t.Fatalf("with the flooder's first not done: got %d of %q, want the admin's 100", it, owner)
	}
	q.mu.Lock()
	ready := len(q.ready)
	q.mu.Unlock()
	if ready != 0 {
		t.Fatal("the flooder's second is ready to be handed out before its first is done")
	}
	next := make(chan int)
	go func() {
		it, _, _ := q.popOwner()
		next <- it
	}()
	q.done("flooder")
	if it := <-next; it != 1 {
		t.Fatalf("after done: %d, want the flooder's 1", it)
	}
	q.done("admin")
	q.done("flooder")
	if it, _, _ := q.popOwner(); it != 2 {
		t.Fatalf("last: %d, want 2", it)
	}
	q.close()
}
