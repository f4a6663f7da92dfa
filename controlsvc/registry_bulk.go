package controlsvc

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bulk changes (machines.import, registry.import, cc-swarm's registration
// of thousands of machines): one compare-and-set write per entry, as
// every change, but pipelined. Written one after the other, 5,000
// machines on a JetStream cluster of three took longer than the request
// that asked for them (each write waits for two brokers' copies).

// bulkWindow is how many writes are in flight at once.
const bulkWindow = 512

// updateMany runs every plan and commits their changes to the bucket
// with up to bulkWindow writes in flight; a plan one of whose writes
// conflicted (another replica changed the entry meanwhile) runs again on
// its own through [Registry.update]. It returns how many plans took
// effect before the first that failed, and that failure. With the file
// store every plan goes through update (one file write each is what the
// file costs anyway; imports of the file store use one plan).
func (r *Registry) updateMany(plans []func(tx *regTx) error) (int, error) {
	for start := 0; start < len(plans); start += bulkWindow {
		chunk := plans[start:min(start+bulkWindow, len(plans))]
		again, err := r.commitChunk(chunk)
		if err != nil {
			return start, err
		}
		for _, i := range again {
			if err := r.update(chunk[i]); err != nil {
				return start + i, err
			}
		}
	}
	return len(plans), nil
}

// bulkWrite is one change of a plan in flight.
type bulkWrite struct {
	plan int
	c    regChange
	ack  jetstream.PubAckFuture
	err  error
}

// commitChunk runs plans (at most bulkWindow) under one read lock, sends
// all their writes, waits for the acknowledgements and applies what the
// bucket took. It returns the plans to run again on their own: those
// with a conflict, and every plan when the store is not the bucket.
func (r *Registry) commitChunk(plans []func(tx *regTx) error) (again []int, err error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.RLock()
	kv := r.kv
	if kv == nil {
		r.mu.RUnlock()
		for i := range plans {
			again = append(again, i)
		}
		return again, nil
	}
	var writes []*bulkWrite
	for i, plan := range plans {
		tx := &regTx{r: r, kv: true, reloaded: map[string]bool{}}
		if err := plan(tx); err != nil {
			var reload reloadError
			if errors.As(err, &reload) {
				again = append(again, i) // update reads it from the bucket
				continue
			}
			r.mu.RUnlock()
			return nil, err
		}
		for _, c := range tx.cs {
			writes = append(writes, &bulkWrite{plan: i, c: c})
		}
	}
	r.mu.RUnlock()
	for _, w := range writes {
		w.ack, w.err = kv.storeOf(w.c.kind).publishAsync(w.c)
	}
	// Each acknowledgement may take up to kvTimeout after the one before:
	// a busy cluster acknowledges a window more slowly, but not never.
	stall := time.NewTimer(kvTimeout)
	defer stall.Stop()
	conflicted := map[int]bool{}
	stalled := false
	for _, w := range writes {
		if w.err != nil {
			break
		}
		var wait <-chan time.Time
		if !stalled {
			wait = stall.C
		} else {
			closed := make(chan time.Time)
			close(closed)
			wait = closed // after a stall: only what is already acknowledged
		}
		select {
		case pa := <-w.ack.Ok():
			r.mu.Lock()
			r.sitesChangedLocked(r.applyKVLocked(w.c.kind, w.c.id, w.c.val, pa.Sequence)...)
			r.mu.Unlock()
		case err := <-w.ack.Err():
			w.err = err
		case <-wait:
			// No word of this write (an acknowledgement lost, or the
			// write): its plan runs again on its own, compare-and-set,
			// which finds the entry written or writes it.
			stalled = true
			conflicted[w.plan] = true
			continue
		}
		stall.Reset(kvTimeout)
		switch {
		case w.err == nil:
		case isConflict(w.err) && !w.c.force:
			conflicted[w.plan] = true
			w.err = nil
		case w.c.force:
			kv.log.Warn("registry: a pending entry made moot could not be deleted; it stays listed until removed",
				"machine", w.c.id, "error", w.err)
			w.err = nil
		}
	}
	for _, w := range writes {
		if w.err != nil {
			return nil, fmt.Errorf("registry partly changed (%s %s not written): %w", w.c.kind, w.c.id, w.err)
		}
	}
	for i := range plans {
		if conflicted[i] {
			again = append(again, i)
		}
	}
	return again, nil
}

// publishAsync sends change c like write does, without waiting for its
// acknowledgement.
func (s *kvStore) publishAsync(c regChange) (jetstream.PubAckFuture, error) {
	key, err := c.checkedKey()
	if err != nil {
		return nil, err
	}
	if c.val == nil {
		m, opts := s.deleteMarker(c)
		return s.js.PublishMsgAsync(m, opts...)
	}
	b, err := json.Marshal(c.val)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg("$KV." + s.bucket + "." + key)
	m.Data = b
	return s.js.PublishMsgAsync(m, jetstream.WithExpectLastSequencePerSubject(c.rev))
}
