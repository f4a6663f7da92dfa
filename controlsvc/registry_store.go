package controlsvc

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// How a registry change is made. An operation (accept, rm, label …) is a
// plan: a function that reads the registry's memory (under the read lock
// the callout reads under too) and says which entries to put or delete.
// The plan is then committed to the store:
//
//   - the JetStream KV bucket (registry_kv.go): each entry is written
//     compare-and-set on the revision the plan read, outside the read
//     lock, so an accept never stalls an admission; when another replica
//     changed the entry meanwhile, that entry is read again and the plan
//     runs again (a bounded number of times): no update is lost;
//   - the legacy file (registry.json, when the broker has no JetStream):
//     the whole file is rewritten under the lock, as before.
//
// Memory changes only once the store has the change, so the callout never
// admits what a restart would forget. Writers are serialised by wmu; the
// pending entries the callout records (registry_pending.go) change memory
// at once and are written shortly after, coalesced.

// Kinds of registry entries: the first part of an entry's KV key.
const (
	kindMachine  = "machine"
	kindPending  = "pending"
	kindOperator = "operator"
	kindApp      = "app"
	kindMeta     = "meta"
	// kindDeny entries are the deny list's, by fleet.Denied.Entry.
	kindDeny = "deny"
)

// maxPlanRuns bounds how often one operation's plan runs when other
// replicas keep changing the entries it writes; between runs after a
// conflict it waits a random moment of up to a millisecond per run so
// far, so two replicas writing one entry in a loop do not collide for
// ever.
const maxPlanRuns = 16

// regChange is one entry's change: val (a *fleet.Machine, *fleet.Pending,
// *fleet.Operator or *fleet.App) put, or the entry deleted (val nil).
type regChange struct {
	kind, id string
	val      any
	// rev is the entry's revision the plan read (KV; 0: absent).
	rev uint64
	// force deletes whatever the entry's revision (a pending entry, which
	// registering the machine makes moot).
	force bool
}

func (c regChange) key() string { return entryKey(c.kind, c.id) }

// regTx collects a plan's changes.
type regTx struct {
	r  *Registry
	cs []regChange
	// kv is set when the store is the bucket; reloaded names the keys
	// read from it again for this operation.
	kv       bool
	reloaded map[string]bool
}

// mayReload reports whether a plan that misses entry kind/id should ask
// for it to be read from the store (another replica may have written it
// a moment ago) before saying it is not there.
func (tx *regTx) mayReload(kind, id string) bool {
	return tx.kv && !tx.reloaded[entryKey(kind, id)]
}

func (tx *regTx) put(kind, id string, val any) {
	tx.cs = append(tx.cs, regChange{kind: kind, id: id, val: val, rev: tx.r.revs[entryKey(kind, id)]})
}

func (tx *regTx) del(kind, id string) {
	tx.cs = append(tx.cs, regChange{kind: kind, id: id, rev: tx.r.revs[entryKey(kind, id)]})
}

// dropPending deletes id's pending entry, if there is one, whatever its
// revision (registering or removing the machine makes it moot).
func (tx *regTx) dropPending(id string) {
	if _, ok := tx.r.data.Pending[id]; ok || tx.r.revs[entryKey(kindPending, id)] != 0 {
		tx.cs = append(tx.cs, regChange{kind: kindPending, id: id, rev: tx.r.revs[entryKey(kindPending, id)], force: true})
	}
}

// reloadError, returned by a plan, asks for keys to be read from the
// store and the plan run again (an entry another replica may have written
// a moment ago).
type reloadError struct{ kind, id string }

func (e reloadError) Error() string { return fmt.Sprintf("%s %s is not loaded", e.kind, e.id) }

// errNotOpen is a write before the service opened the registry.
var errNotOpen = errors.New("the registry is not open yet: the control service opens it when it starts (Service.Start)")

// update runs plan and commits its changes (see above).
func (r *Registry) update(plan func(tx *regTx) error) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	reloaded := map[string]bool{}
	for run := 1; ; run++ {
		tx := &regTx{r: r, kv: r.kv != nil, reloaded: reloaded}
		r.mu.RLock()
		kv, file := r.kv, r.file
		err := errNotOpen
		if kv != nil || file {
			err = plan(tx)
		}
		r.mu.RUnlock()
		var reload reloadError
		if errors.As(err, &reload) {
			if kv == nil || run >= maxPlanRuns {
				return fmt.Errorf("registry not changed: %s %s could not be read from the bucket in %d tries; try again", reload.kind, reload.id, run)
			}
			reloaded[entryKey(reload.kind, reload.id)] = true
			if err := kv.reload(r, reload.kind, reload.id); err != nil {
				return fmt.Errorf("registry: read %s %s: %w", reload.kind, reload.id, err)
			}
			continue
		}
		if err != nil || len(tx.cs) == 0 {
			return err
		}
		if kv == nil {
			return r.commitFile(tx.cs)
		}
		conflict, err := kv.commit(r, tx.cs)
		if conflict == nil || err != nil {
			return err
		}
		if run == maxPlanRuns {
			return fmt.Errorf("registry not changed: %s %s kept changing under this change (other control-service replicas writing it); try again", conflict.kind, conflict.id)
		}
		time.Sleep(rand.N(time.Duration(run) * time.Millisecond))
		if err := kv.reload(r, conflict.kind, conflict.id); err != nil {
			return fmt.Errorf("registry not changed: %s %s was changed elsewhere and cannot be read again: %w", conflict.kind, conflict.id, err)
		}
	}
}

// commitFile applies cs to memory and rewrites the file; when the write
// fails, memory is put back, so a change not on disk does not take effect.
func (r *Registry) commitFile(cs []regChange) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	undo := make([]regChange, len(cs))
	var sites []string
	for i, c := range cs {
		undo[i] = regChange{kind: c.kind, id: c.id, val: r.valueLocked(c.kind, c.id)}
		sites = append(sites, r.setLocked(c.kind, c.id, c.val)...)
	}
	if err := r.saveLocked(); err != nil {
		for i := len(undo) - 1; i >= 0; i-- {
			r.setLocked(undo[i].kind, undo[i].id, undo[i].val)
		}
		r.changes.Add(1)
		return fmt.Errorf("registry not changed: %w", err)
	}
	r.sitesChangedLocked(sites...)
	return nil
}

// saveLocked rewrites the registry file from memory.
func (r *Registry) saveLocked() error {
	r.changes.Add(1)
	b, err := json.MarshalIndent(&r.data, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(r.path, append(b, '\n'), 0o600); err != nil {
		return err
	}
	r.pendingDirty = false
	return nil
}

// valueLocked is the entry kind/id in memory, or nil.
func (r *Registry) valueLocked(kind, id string) any {
	switch kind {
	case kindMachine:
		if v, ok := r.data.Machines[id]; ok {
			return v
		}
	case kindPending:
		if v, ok := r.data.Pending[id]; ok {
			return v
		}
	case kindOperator:
		if v, ok := r.data.Operators[id]; ok {
			return v
		}
	case kindApp:
		if v, ok := r.data.Apps[id]; ok {
			return v
		}
	case kindDeny:
		if v, ok := r.data.Denied[id]; ok {
			return v
		}
	}
	return nil
}

// setLocked puts val (nil: deletes the entry) in memory and returns the
// remote sites whose sets of machines it changed. It counts a change.
func (r *Registry) setLocked(kind, id string, val any) []string {
	r.changes.Add(1)
	switch kind {
	case kindMachine:
		old, had := r.data.Machines[id]
		m, _ := val.(*fleet.Machine)
		setOrDelete(r.data.Machines, id, m)
		switch {
		case had && m == nil:
			return []string{old.Site}
		case !had && m != nil:
			return []string{m.Site}
		case had && old.Site != m.Site:
			return []string{old.Site, m.Site}
		}
	case kindPending:
		p, _ := val.(*fleet.Pending)
		setOrDelete(r.data.Pending, id, p)
	case kindOperator:
		o, _ := val.(*fleet.Operator)
		setOrDelete(r.data.Operators, id, o)
	case kindApp:
		a, _ := val.(*fleet.App)
		setOrDelete(r.data.Apps, id, a)
	case kindDeny:
		d, _ := val.(*fleet.Denied)
		setOrDelete(r.data.Denied, id, d)
	}
	return nil
}

func setOrDelete[V any](m map[string]*V, k string, v *V) {
	if v == nil {
		delete(m, k)
	} else {
		m[k] = v
	}
}
