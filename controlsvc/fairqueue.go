package controlsvc

import "sync"

// fairQueue is the fair queue of reply subjects (presence snapshots).
type fairQueue = fairQueueOf[string]

// fairQueueOf holds work per owner and hands it out round-robin: one item
// of each owner with work in turn, so an owner with a thousand items
// queued delays another owner's one item by at most one item per owner,
// not by a thousand. Each owner may queue at most max items and, when
// busy is set, have at most busy items handed out and not yet done
// (pop's caller calls done): an owner's burst then keeps at most busy
// workers, the others stay free for everyone else.
type fairQueueOf[T any] struct {
	mu     sync.Mutex
	cond   *sync.Cond
	queues map[string][]T
	ready  []string // owners with work they may be handed, in turn order
	// inFlight counts, when busy > 0, the items handed out and not done.
	inFlight map[string]int
	max      int
	busy     int
	closed   bool
}

func newFairQueue(max int) *fairQueue { return newFairQueueOf[string](max, 0) }

// newFairQueueOf returns a queue of at most max items per owner, at most
// busy of them handed out at a time (0: no bound).
func newFairQueueOf[T any](max, busy int) *fairQueueOf[T] {
	q := &fairQueueOf[T]{queues: map[string][]T{}, inFlight: map[string]int{}, max: max, busy: busy}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// push queues item for owner; false when owner already has max queued or
// the queue is closed.
func (q *fairQueueOf[T]) push(owner string, item T) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || len(q.queues[owner]) >= q.max {
		return false
	}
	if len(q.queues[owner]) == 0 && q.mayHand(owner) {
		q.ready = append(q.ready, owner)
		q.cond.Signal()
	}
	q.queues[owner] = append(q.queues[owner], item)
	return true
}

// mayHand reports whether owner may be handed another item.
func (q *fairQueueOf[T]) mayHand(owner string) bool {
	return q.busy <= 0 || q.inFlight[owner] < q.busy
}

// pop waits for the next item in turn and returns it with its owner;
// false once the queue is closed.
func (q *fairQueueOf[T]) pop() (T, bool) {
	item, _, ok := q.popOwner()
	return item, ok
}

// popOwner is pop, with the item's owner (for done).
func (q *fairQueueOf[T]) popOwner() (T, string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.ready) == 0 && !q.closed {
		q.cond.Wait()
	}
	var zero T
	if q.closed {
		return zero, "", false
	}
	owner := q.ready[0]
	q.ready = q.ready[1:]
	items := q.queues[owner]
	item := items[0]
	items[0] = zero
	if len(items) == 1 {
		delete(q.queues, owner)
	} else {
		q.queues[owner] = items[1:]
	}
	if q.busy > 0 {
		q.inFlight[owner]++
	}
	if len(items) > 1 && q.mayHand(owner) {
		q.ready = append(q.ready, owner)
	}
	return item, owner, true
}

// done says an item of owner handed out by popOwner is finished (only
// needed when busy is set).
func (q *fairQueueOf[T]) done(owner string) {
	if q.busy <= 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	wasBlocked := !q.mayHand(owner)
	if q.inFlight[owner]--; q.inFlight[owner] <= 0 {
		delete(q.inFlight, owner)
	}
	if wasBlocked && len(q.queues[owner]) > 0 && !q.closed {
		q.ready = append(q.ready, owner)
		q.cond.Signal()
	}
}

// close wakes every pop, which then returns false.
func (q *fairQueueOf[T]) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}
