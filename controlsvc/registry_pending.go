package controlsvc

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Pending entries are recorded for every refused unknown connection, at
// whatever rate strangers knock. Recording changes memory only; the
// entries changed since are written shortly after, coalesced
// ([Registry.FlushPending]): the whole file, or each changed entry to the
// bucket (compare-and-set; an entry another replica recorded meanwhile is
// merged with this one's, see mergePending).

// FlushPending writes pending entries recorded since the last write.
func (r *Registry) FlushPending() error {
	r.wmu.Lock()
	kv := r.kv
	r.wmu.Unlock()
	if kv != nil {
		return r.flushPendingKV(kv)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.file || !r.pendingDirty {
		return nil
	}
	return r.saveLocked()
}

// RecordPendingAt notes a refused machine so an operator can accept it,
// for an attempt that remote site's broker reported ("": the hub's own
// brokers). It only changes memory: [Registry.FlushPending], run
// periodically, writes it, so a flood of unknown machines never stalls
// the callout on the store.
//
// Each distinct key that tries an id is kept (most recent first, at most
// [fleet.MaxPendingKeys]): a later attempt with another key never replaces
// the key an operator may be reviewing. The caller records
// a site's attempts only for ids not in the registry and the site's own
// machines (see callout.decideAt). A site's attempt at a new id is not
// recorded when the list is full: it never pushes out another entry, so
// a compromised site cannot flush the hub's pending machines.
func (r *Registry) RecordPendingAt(id, key, ip, site, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now().UTC()
	p, ok := r.data.Pending[id]
	if !ok {
		if len(r.data.Pending) >= MaxPending {
			if site != "" {
				return // a site's attempts never push others' entries out
			}
			r.dropOldestPendingLocked()
		}
		p = &fleet.Pending{ID: id, FirstSeen: now}
		r.data.Pending[id] = p
		r.pendingDirty = true
	}
	p.Keys = pendingKeys(p)
	p.Key, p.IP, p.Reason, p.Site, p.LastSeen = key, ip, reason, site, now
	p.Attempts++
	i := slices.IndexFunc(p.Keys, func(k fleet.PendingKey) bool { return k.Key == key })
	if i < 0 {
		if len(p.Keys) >= fleet.MaxPendingKeys {
			p.Keys = p.Keys[:fleet.MaxPendingKeys-1] // the least recently seen is last
			p.KeysDropped++
		}
		p.Keys = append(p.Keys, fleet.PendingKey{Key: key, FirstSeen: now})
		i = len(p.Keys) - 1
		r.pendingDirty = true
	}
	k := p.Keys[i]
	k.IP, k.Reason, k.Site, k.LastSeen = ip, reason, site, now
	k.Attempts++
	copy(p.Keys[1:i+1], p.Keys[:i]) // most recent first
	p.Keys[0] = k
	p.MultipleKeys = len(p.Keys) > 1 || p.KeysDropped > 0
	if r.kv != nil {
		r.pendingSeq++
		r.dirtyPending[id] = r.pendingSeq
		delete(r.gonePending, id)
	}
}

// dropOldestPendingLocked drops the pending entry seen longest ago.
func (r *Registry) dropOldestPendingLocked() {
	var oldest string
	var t time.Time
	for id, p := range r.data.Pending {
		if oldest == "" || p.LastSeen.Before(t) {
			oldest, t = id, p.LastSeen
		}
	}
	delete(r.data.Pending, oldest)
	r.changes.Add(1)
	if r.kv != nil {
		delete(r.dirtyPending, oldest)
		if r.revs[entryKey(kindPending, oldest)] != 0 {
			r.gonePending[oldest] = true
		}
	}
}

// pendingFlushKV is how often pending entries go to the bucket.
const pendingFlushKV = 200 * time.Millisecond

// inBucket reports whether the registry is kept in the KV bucket.
func (r *Registry) inBucket() bool {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return r.kv != nil
}

// pendingFlushBatch bounds the entries one flush writes while holding
// the writers' lock, so an operator's accept waits for at most one batch.
const pendingFlushBatch = 256

// flushPendingKV writes the pending entries changed in memory since the
// last flush to the bucket, and deletes those dropped from it.
func (r *Registry) flushPendingKV(kv *kvStore) error {
	r.mu.Lock()
	ids := make([]string, 0, len(r.dirtyPending)+len(r.gonePending))
	for id := range r.dirtyPending {
		ids = append(ids, id)
	}
	gone := maps.Clone(r.gonePending)
	for id := range gone {
		if _, dirty := r.dirtyPending[id]; !dirty {
			ids = append(ids, id)
		}
	}
	// A dirty id stays dirty until its write succeeds (and nothing
	// changed it meanwhile): the watcher merges, rather than replaces,
	// another replica's record of it until then.
	clear(r.gonePending)
	r.mu.Unlock()
	sort.Strings(ids)
	for len(ids) > 0 {
		n := min(len(ids), pendingFlushBatch)
		if err := r.flushPendingBatch(kv, ids[:n], gone); err != nil {
			r.mu.Lock()
			for _, id := range ids[n:] {
				if gone[id] {
					r.gonePending[id] = true // dirty ones stay dirty
				}
			}
			r.mu.Unlock()
			return err
		}
		ids = ids[n:]
	}
	return nil
}

// flushPendingBatch writes ids. It stops at the first failure (the bucket
// unreachable: every other write would wait as long), leaving the rest
// for the next flush.
func (r *Registry) flushPendingBatch(kv *kvStore, ids []string, gone map[string]bool) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	for i, id := range ids {
		if err := r.flushPendingOne(kv, id, gone[id]); err != nil {
			r.mu.Lock()
			for _, id := range ids[i:] {
				if gone[id] {
					r.gonePending[id] = true // dirty ones stay dirty
				}
			}
			r.mu.Unlock()
			return fmt.Errorf("write pending machine %s (%d left for the next flush): %w", id, len(ids)-i, err)
		}
	}
	return nil
}

// flushPendingOne writes (or deletes) pending entry id, merging it with
// the bucket's when another replica wrote it meanwhile.
func (r *Registry) flushPendingOne(kv *kvStore, id string, gone bool) error {
	for range maxPlanRuns {
		r.mu.RLock()
		c := regChange{kind: kindPending, id: id, rev: r.revs[entryKey(kindPending, id)]}
		seq, dirty := r.dirtyPending[id]
		if p, ok := r.data.Pending[id]; ok {
			cp := copyPending(p)
			c.val = &cp
		}
		r.mu.RUnlock()
		if c.val == nil && (c.rev == 0 || !gone) {
			// Dropped before it was ever written, or deleted since
			// (accepted, removed): nothing to write.
			r.mu.Lock()
			if dirty && r.dirtyPending[id] == seq {
				delete(r.dirtyPending, id)
			}
			r.mu.Unlock()
			return nil
		}
		rev, err := kv.write(c)
		if err == nil {
			r.mu.Lock()
			if c.val == nil {
				r.applyKVLocked(c.kind, c.id, nil, rev)
			} else if rev > r.revs[c.key()] {
				r.revs[c.key()] = rev // memory may hold newer attempts: keep them
			}
			if dirty && r.dirtyPending[id] == seq {
				delete(r.dirtyPending, id)
			}
			r.mu.Unlock()
			return nil
		}
		if !isConflict(err) {
			return err
		}
		if c.val == nil {
			return nil // another replica changed the entry we dropped: theirs stands
		}
		if err := kv.reload(r, kindPending, id); err != nil {
			return err
		}
	}
	return fmt.Errorf("pending machine %s kept changing under this replica's write", id)
}

// mergePending merges two records of the same pending id (this replica's
// and another's): every key either saw, the most recent first, and the
// larger counts.
func mergePending(a, b *fleet.Pending) *fleet.Pending {
	if a.LastSeen.After(b.LastSeen) {
		a, b = b, a // b is the more recent
	}
	out := copyPending(b)
	out.FirstSeen = minTime(a.FirstSeen, b.FirstSeen)
	out.Attempts = max(a.Attempts, b.Attempts)
	out.KeysDropped = max(a.KeysDropped, b.KeysDropped)
	keys := slices.Clone(pendingKeys(b))
	for _, k := range pendingKeys(a) {
		i := slices.IndexFunc(keys, func(x fleet.PendingKey) bool { return x.Key == k.Key })
		if i < 0 {
			keys = append(keys, k)
			continue
		}
		x := &keys[i]
		x.FirstSeen = minTime(x.FirstSeen, k.FirstSeen)
		x.Attempts = max(x.Attempts, k.Attempts)
		if k.LastSeen.After(x.LastSeen) {
			x.LastSeen, x.IP, x.Reason, x.Site = k.LastSeen, k.IP, k.Reason, k.Site
		}
	}
	sort.SliceStable(keys, func(i, j int) bool { return keys[i].LastSeen.After(keys[j].LastSeen) })
	if len(keys) > fleet.MaxPendingKeys {
		out.KeysDropped += len(keys) - fleet.MaxPendingKeys
		keys = keys[:fleet.MaxPendingKeys]
	}
	out.Keys = keys
	out.MultipleKeys = len(keys) > 1 || out.KeysDropped > 0
	return &out
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func copyPending(p *fleet.Pending) fleet.Pending {
	c := *p
	c.Keys = slices.Clone(p.Keys)
	return c
}

// Pending lists machines waiting to be accepted, sorted by id.
func (r *Registry) Pending() []fleet.Pending {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]fleet.Pending, 0, len(r.data.Pending))
	for _, p := range r.data.Pending {
		c := *p
		c.Keys = slices.Clone(pendingKeys(p))
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// PendingAfter returns at most limit pending entries with ids after
// after, in id order, whether more follow, and how many there are in all.
// Only the page is copied: listing 10,000 pending machines page by page
// copied (keys included) and sorted all of them for every page.
func (r *Registry) PendingAfter(after string, limit int) ([]fleet.Pending, bool, int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids, more := keysAfter(r.data.Pending, after, limit)
	out := make([]fleet.Pending, 0, len(ids))
	for _, id := range ids {
		p := r.data.Pending[id]
		c := *p
		c.Keys = slices.Clone(pendingKeys(p))
		out = append(out, c)
	}
	return out, more, len(r.data.Pending)
}
