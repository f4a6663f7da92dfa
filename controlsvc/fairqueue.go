package controlsvc

import "sync"

// fairQueue holds work per owner and hands it out round-robin: one item of
// each owner with work in turn, so an owner with a thousand items queued
// delays another owner's one item by at most one item per owner, not by
// a thousand. Each owner may queue at most max items.
type fairQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	queues map[string][]string
	ready  []string // owners with work, in turn order
	max    int
	closed bool
}

func newFairQueue(max int) *fairQueue {
	q := &fairQueue{queues: map[string][]string{}, max: max}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// push queues item for owner; false when owner already has max queued or
// the queue is closed.
func (q *fairQueue) push(owner, item string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || len(q.queues[owner]) >= q.max {
		return false
	}
	if len(q.queues[owner]) == 0 {
		q.ready = append(q.ready, owner)
	}
	q.queues[owner] = append(q.queues[owner], item)
	q.cond.Signal()
	return true
}

// pop waits for the next item in turn; false once the queue is closed.
func (q *fairQueue) pop() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.ready) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return "", false
	}
	owner := q.ready[0]
	q.ready = q.ready[1:]
	items := q.queues[owner]
	item := items[0]
	if len(items) == 1 {
		delete(q.queues, owner)
	} else {
		q.queues[owner] = items[1:]
		q.ready = append(q.ready, owner)
	}
	return item, true
}

// close wakes every pop, which then returns false.
func (q *fairQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}
