package controlsvc

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nkeys"
)

// The deny list and rejecting pending machines (cc-bench machines deny,
// undeny, reject). A denied machine id or key is refused by the callout
// at once, from memory, and never recorded as pending: a removed host
// that keeps retrying stays off the pending list. Entries are kept like
// every other registry entry (deny.<entry> in the bucket, "denied" in
// registry.json), so every replica refuses them. Only an admin adds
// entries: nothing a stranger does grows the list.
//
// The list only ever refuses what would otherwise be pending: an id or
// key registered to a machine (or an operator's key) cannot be denied,
// and a machine cannot be registered or accepted with a denied id or key
// until it is undenied.

// validateDenied checks deny list entry entry as the registry keeps it.
func validateDenied(entry string, x *fleet.Denied) error {
	if x == nil || x.Entry() != entry {
		return fmt.Errorf("deny list entry %.80q is malformed", entry)
	}
	if x.ID != "" {
		if err := fleet.ValidateMachineID(x.ID); err != nil {
			return fmt.Errorf("deny list entry: %w", err)
		}
	}
	if x.Key != "" && !nkeys.IsValidPublicUserKey(x.Key) {
		return fmt.Errorf("deny list entry %.80q: the key is not a public user nkey", entry)
	}
	return nil
}

// checkDenyRequest validates a deny or undeny request: exactly one of an
// id and a key, each well formed.
func checkDenyRequest(q fleet.DenyRequest) (string, error) {
	switch {
	case q.ID != "" && q.Key != "":
		return "", invalidf("give a machine id or a key to deny, not both")
	case q.ID == "" && q.Key == "":
		return "", invalidf("give a machine id or a public key (U…) to deny")
	case q.ID != "":
		if err := fleet.ValidateMachineID(q.ID); err != nil {
			return "", invalid(err)
		}
	case !nkeys.IsValidPublicUserKey(q.Key):
		return "", invalidf("key %.80q is not a public user nkey (56 characters starting with U)", q.Key)
	}
	return fleet.DenyEntry(q.ID, q.Key), nil
}

// Denies reports whether the deny list refuses a connection as machine
// id with key, and which entry does. It reads memory only: the callout
// asks it for every connection that would otherwise be pending.
func (r *Registry) Denies(id, key string) (fleet.Denied, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.data.Denied) == 0 {
		return fleet.Denied{}, false
	}
	if x, ok := r.data.Denied[fleet.DenyEntry("", key)]; ok && key != "" {
		return *x, true
	}
	if x, ok := r.data.Denied[fleet.DenyEntry(id, "")]; ok && id != "" {
		return *x, true
	}
	return fleet.Denied{}, false
}

// deniedStranger is [Registry.Denies] for a connection that is neither
// the machine registered as id with key nor an operator: those are never
// refused by the deny list (it refuses only what would be pending).
func (r *Registry) deniedStranger(id, key string) (fleet.Denied, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.data.Denied) == 0 {
		return fleet.Denied{}, false
	}
	x, ok := r.data.Denied[fleet.DenyEntry("", key)]
	if !ok || key == "" {
		if x, ok = r.data.Denied[fleet.DenyEntry(id, "")]; !ok || id == "" {
			return fleet.Denied{}, false
		}
	}
	if m, reg := r.data.Machines[id]; reg && m.Key == key {
		return fleet.Denied{}, false
	}
	for _, o := range r.data.Operators {
		if o.Key == key {
			return fleet.Denied{}, false
		}
	}
	return *x, true
}

// deniedLocked says why id or key may not be registered ("" when they
// may).
func (r *Registry) deniedLocked(id, key string) string {
	if _, ok := r.data.Denied[fleet.DenyEntry(id, "")]; ok {
		return fmt.Sprintf("machine id %s is on the deny list; take it off first with: cc-bench machines undeny %s", id, id)
	}
	if _, ok := r.data.Denied[fleet.DenyEntry("", key)]; ok && key != "" {
		return fmt.Sprintf("key %s is on the deny list; take it off first with: cc-bench machines undeny %s", key, key)
	}
	return ""
}

// Deny adds an id or a key to the deny list and drops the pending
// entries it makes moot: the denied id's, and those every key of which
// is denied. An id registered to a machine, or a key a machine or an
// operator holds, is refused: remove the machine first.
func (r *Registry) Deny(q fleet.DenyRequest, by string) (fleet.DenyResult, error) {
	entry, err := checkDenyRequest(q)
	if err != nil {
		return fleet.DenyResult{}, err
	}
	var out fleet.DenyResult
	err = r.update(func(tx *regTx) error {
		if _, ok := r.data.Denied[entry]; ok {
			return fmt.Errorf("%s is on the deny list already: %w", denyText(q), ErrExists)
		}
		if len(r.data.Denied) >= fleet.MaxDenied {
			return fmt.Errorf("the deny list holds %d entries, the most it may: undeny some first: %w", len(r.data.Denied), ErrConflict)
		}
		if q.ID != "" {
			if _, ok := r.data.Machines[q.ID]; ok {
				return fmt.Errorf("machine %s is registered; remove it first (cc-bench machines rm %s), then deny it: %w", q.ID, q.ID, ErrConflict)
			}
		} else {
			for _, m := range r.data.Machines {
				if m.Key == q.Key {
					return fmt.Errorf("key %s is registered to machine %s; remove the machine first (cc-bench machines rm %s), then deny the key: %w", q.Key, m.ID, m.ID, ErrConflict)
				}
			}
			for _, o := range r.data.Operators {
				if o.Key == q.Key {
					return fmt.Errorf("key %s belongs to operator %s, not a machine: %w", q.Key, o.Name, ErrConflict)
				}
			}
		}
		x := &fleet.Denied{ID: q.ID, Key: q.Key, AddedAt: r.now().UTC(), AddedBy: by}
		tx.put(kindDeny, entry, x)
		out = fleet.DenyResult{Denied: *x}
		for _, id := range r.mootPendingLocked(q) {
			tx.dropPending(id)
			out.DroppedPending = append(out.DroppedPending, id)
		}
		return nil
	})
	return out, err
}

// mootPendingLocked lists the pending ids denying q makes moot, sorted.
func (r *Registry) mootPendingLocked(q fleet.DenyRequest) []string {
	var out []string
	if q.ID != "" {
		if _, ok := r.data.Pending[q.ID]; ok {
			out = append(out, q.ID)
		}
		return out
	}
	for id, p := range r.data.Pending {
		keys := pendingKeys(p)
		if len(keys) > 0 && !slices.ContainsFunc(keys, func(k fleet.PendingKey) bool {
			if k.Key == q.Key {
				return false
			}
			_, denied := r.data.Denied[fleet.DenyEntry("", k.Key)]
			return !denied
		}) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Undeny takes an id or a key off the deny list and returns the entry.
func (r *Registry) Undeny(q fleet.DenyRequest) (fleet.Denied, error) {
	entry, err := checkDenyRequest(q)
	if err != nil {
		return fleet.Denied{}, err
	}
	var out fleet.Denied
	err = r.update(func(tx *regTx) error {
		x, ok := r.data.Denied[entry]
		if !ok {
			if tx.mayReload(kindDeny, entry) {
				return reloadError{kindDeny, entry}
			}
			return fmt.Errorf("%s is not on the deny list (list it with: cc-bench machines deny ls): %w", denyText(q), ErrNotFound)
		}
		tx.del(kindDeny, entry)
		out = *x
		return nil
	})
	return out, err
}

// Reject drops the pending entry id. It never touches a registered
// machine (a pending entry for a registered id is a key that did not
// match: only that entry goes).
func (r *Registry) Reject(id string) error {
	if err := fleet.ValidateMachineID(id); err != nil {
		return invalid(err)
	}
	return r.update(func(tx *regTx) error {
		if _, ok := r.data.Pending[id]; !ok {
			if tx.mayReload(kindPending, id) {
				return reloadError{kindPending, id}
			}
			return fmt.Errorf("machine %s is not pending (list pending machines with: cc-bench machines pending): %w", id, ErrNotFound)
		}
		tx.dropPending(id)
		return nil
	})
}

// DeniedAfter returns at most limit deny list entries after after (an
// entry name), sorted, whether more follow, and how many there are.
func (r *Registry) DeniedAfter(after string, limit int) ([]fleet.Denied, bool, int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	entries, more := keysAfter(r.data.Denied, after, limit)
	out := make([]fleet.Denied, 0, len(entries))
	for _, e := range entries {
		out = append(out, *r.data.Denied[e])
	}
	return out, more, len(r.data.Denied)
}

// denyText names a deny request for a message.
func denyText(q fleet.DenyRequest) string {
	if q.ID != "" {
		return "machine id " + q.ID
	}
	return "key " + strings.TrimSpace(q.Key)
}
