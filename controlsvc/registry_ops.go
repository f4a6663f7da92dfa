package controlsvc

import (
	"fmt"
	"sort"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nkeys"
)

// The registry's changes to machines and operators. Each is a plan run by
// [Registry.update] (registry_store.go): it reads memory and says what to
// write, and may run again when another replica changed an entry it
// writes.

// AddMachine registers id with key and labels. It replaces an existing
// entry's key and labels when replace is true.
func (r *Registry) AddMachine(id, key string, labels map[string]string, by string, replace bool) (fleet.Machine, error) {
	c, err := r.SetMachine(id, key, labels, by, replace)
	return c.Machine, err
}

// SetMachine is [Registry.AddMachine] that also says which key, if any,
// the change replaced (the caller closes that key's connections).
func (r *Registry) SetMachine(id, key string, labels map[string]string, by string, replace bool) (fleet.MachineChange, error) {
	return r.SetMachineAt(id, key, "", labels, by, replace)
}

// SetMachineAt is [Registry.SetMachine] for a machine at remote site
// ("": the hub).
func (r *Registry) SetMachineAt(id, key, site string, labels map[string]string, by string, replace bool) (fleet.MachineChange, error) {
	if err := checkMachine(id, key, site, labels); err != nil {
		return fleet.MachineChange{}, err
	}
	var c fleet.MachineChange
	err := r.update(func(tx *regTx) error {
		var err error
		c, err = tx.setMachine(id, key, site, labels, by, replace)
		return err
	})
	return c, err
}

// checkMachine validates what a machine is registered with.
func checkMachine(id, key, site string, labels map[string]string) error {
	if err := validateSite(site); err != nil {
		return err
	}
	if err := fleet.ValidateMachineID(id); err != nil {
		return invalid(err)
	}
	if !nkeys.IsValidPublicUserKey(key) {
		return invalidf("key %q is not a public user nkey (56 characters starting with U; cc-agent --print-key shows it)", key)
	}
	return validateLabels(labels)
}

func (tx *regTx) setMachine(id, key, site string, labels map[string]string, by string, replace bool) (fleet.MachineChange, error) {
	r := tx.r
	old, had := r.data.Machines[id]
	if had && !replace {
		if old.Key == key {
			return fleet.MachineChange{}, fmt.Errorf("machine %s is already registered with this key: %w", id, ErrExists)
		}
		return fleet.MachineChange{}, fmt.Errorf("machine %s is already registered with key %s; to replace that key (its live connections are closed) run: cc-bench machines add %s --pubkey %s --replace: %w", id, old.Key, id, key, ErrExists)
	}
	for _, o := range r.data.Operators {
		if o.Key == key {
			return fleet.MachineChange{}, fmt.Errorf("key %s belongs to operator %s; a machine needs a key of its own: %w", key, o.Name, ErrExists)
		}
	}
	if why := r.deniedLocked(id, key); why != "" {
		return fleet.MachineChange{}, fmt.Errorf("%s: %w", why, ErrConflict)
	}
	m := &fleet.Machine{ID: id, Key: key, Labels: copyLabels(labels), Site: site, AddedAt: r.now().UTC(), AddedBy: by}
	tx.put(kindMachine, id, m)
	tx.dropPending(id)
	c := fleet.MachineChange{Machine: copyMachine(m)}
	if had && old.Key != key {
		c.ReplacedKey = old.Key
	}
	return c, nil
}

// AcceptAt registers the pending machine id with the key the operator
// reviewed, placing it at remote site ("": where the machine is
// registered already, else the hub). want is that key, or a unique prefix
// of one of the keys that tried the id. want may be empty only when a
// single key tried the id: anyone may try any id with a key of their own,
// so with several keys the operator must say which one is the machine's.
//
// A key a remote site reported is accepted only at that site, and only
// when site names it: a site says what it likes about the machines at its
// broker (a compromised one can present a key of its own for any id, even
// one the hub is about to add), and the hub believes a site only about
// its own machines, so an operator must say that the machine is there.
// Placing such a machine elsewhere takes the key checked on the host:
// cc-bench machines add ID --pubkey KEY.
//
// A pending entry another replica recorded a moment ago, not yet in this
// replica's memory, is read from the bucket.
func (r *Registry) AcceptAt(id, want, site, by string) (fleet.MachineChange, error) {
	return r.acceptAt(id, want, site, by, false)
}

// AcceptNewAt is [Registry.AcceptAt] that refuses an id registered
// already: a bulk accept takes new machines only, and never gives a
// registered machine the key a stranger tried it with.
func (r *Registry) AcceptNewAt(id, want, site, by string) (fleet.MachineChange, error) {
	return r.acceptAt(id, want, site, by, true)
}

func (r *Registry) acceptAt(id, want, site, by string, onlyNew bool) (fleet.MachineChange, error) {
	if err := validateSite(site); err != nil {
		return fleet.MachineChange{}, err
	}
	var c fleet.MachineChange
	err := r.update(func(tx *regTx) error {
		var err error
		c, err = tx.accept(id, want, site, by, onlyNew)
		return err
	})
	return c, err
}

func (tx *regTx) accept(id, want, site, by string, onlyNew bool) (fleet.MachineChange, error) {
	r := tx.r
	p, ok := r.data.Pending[id]
	if !ok {
		if tx.mayReload(kindPending, id) {
			return fleet.MachineChange{}, reloadError{kindPending, id}
		}
		return fleet.MachineChange{}, fmt.Errorf("machine %s is not pending (list pending machines with: cc-bench machines pending): %w", id, ErrNotFound)
	}
	if _, registered := r.data.Machines[id]; registered && onlyNew {
		return fleet.MachineChange{}, fmt.Errorf("machine %s is registered already (another key tried its id); a bulk accept never replaces a key: "+
			"check the key on the host (cc-agent --print-key) and accept it alone with: cc-bench machines accept %s --pubkey KEY: %w", id, id, ErrConflict)
	}
	k, err := pickPendingKey(p, want)
	if err != nil {
		return fleet.MachineChange{}, err
	}
	if k.Site != "" && site != "" && site != k.Site {
		return fleet.MachineChange{}, fmt.Errorf("key %s tried machine %s through site %s's broker, so it may be accepted only at that site "+
			"(cc-bench machines accept %s --pubkey %s --site %s); to place the machine at site %s, check its key on the host "+
			"(cc-agent --print-key) and run: cc-bench machines add %s --pubkey KEY --site %s --replace: %w",
			k.Key, id, k.Site, id, k.Key, k.Site, site, id, site, ErrConflict)
	}
	if k.Site != "" && site == "" {
		return fleet.MachineChange{}, fmt.Errorf("key %s tried machine %s through site %s's broker, not the hub's: if the machine is at site %s, "+
			"say so with: cc-bench machines accept %s --pubkey %s --site %s; a site may report any id, so if it is not there, check its key "+
			"on the host (cc-agent --print-key) and run: cc-bench machines add %s --pubkey KEY: %w",
			k.Key, id, k.Site, k.Site, id, k.Key, k.Site, id, ErrConflict)
	}
	var labels map[string]string
	if m, ok := r.data.Machines[id]; ok {
		labels = m.Labels
		if site == "" {
			site = m.Site // a re-keyed machine stays where it is
		}
	}
	return tx.setMachine(id, k.Key, site, labels, by, true)
}

// RemoveMachine deletes id from the registry (and from pending).
func (r *Registry) RemoveMachine(id string) error {
	return r.update(func(tx *regTx) error {
		_, reg := r.data.Machines[id]
		_, pend := r.data.Pending[id]
		if !reg && !pend {
			for _, kind := range []string{kindMachine, kindPending} {
				if tx.mayReload(kind, id) {
					return reloadError{kind, id}
				}
			}
			return fmt.Errorf("machine %s is neither registered nor pending: %w", id, ErrNotFound)
		}
		if reg {
			tx.del(kindMachine, id)
		}
		tx.dropPending(id)
		return nil
	})
}

// Label sets and removes labels on machine id.
func (r *Registry) Label(id string, set map[string]string, remove []string) (fleet.Machine, error) {
	if err := validateLabels(set); err != nil {
		return fleet.Machine{}, err
	}
	var out fleet.Machine
	err := r.update(func(tx *regTx) error {
		old, ok := r.data.Machines[id]
		if !ok {
			if tx.mayReload(kindMachine, id) {
				return reloadError{kindMachine, id}
			}
			return fmt.Errorf("machine %s is not registered: %w", id, ErrNotFound)
		}
		m := copyMachine(old)
		if m.Labels == nil {
			m.Labels = map[string]string{}
		}
		for k, v := range set {
			m.Labels[k] = v
		}
		for _, k := range remove {
			delete(m.Labels, k)
		}
		tx.put(kindMachine, id, &m)
		out = copyMachine(&m)
		return nil
	})
	return out, err
}

// AddOperator registers an operator.
func (r *Registry) AddOperator(name, key, role string) (fleet.Operator, error) {
	return r.AddOperatorWith(name, key, role, false)
}

// AddOperatorWith is [Registry.AddOperator] that also grants (or not) the
// sessions permission (fleet.Operator.Sessions).
func (r *Registry) AddOperatorWith(name, key, role string, sessions bool) (fleet.Operator, error) {
	if err := fleet.ValidateName("operator name", name); err != nil {
		return fleet.Operator{}, invalid(err)
	}
	if !fleet.ValidRole(role) {
		return fleet.Operator{}, invalidf("role %q is unknown; use %s or %s", role, fleet.RoleAdmin, fleet.RoleViewer)
	}
	if !nkeys.IsValidPublicUserKey(key) {
		return fleet.Operator{}, invalidf("key %q is not a public user nkey (56 characters starting with U)", key)
	}
	var out fleet.Operator
	err := r.update(func(tx *regTx) error {
		if _, ok := r.data.Operators[name]; ok {
			return fmt.Errorf("operator %s: %w", name, ErrExists)
		}
		for _, o := range r.data.Operators {
			if o.Key == key {
				return fmt.Errorf("key %s already belongs to operator %s: %w", key, o.Name, ErrExists)
			}
		}
		for _, m := range r.data.Machines {
			if m.Key == key {
				return fmt.Errorf("key %s belongs to machine %s; an operator needs a key of its own: %w", key, m.ID, ErrExists)
			}
		}
		o := &fleet.Operator{Name: name, Key: key, Role: role, AddedAt: r.now().UTC(), Sessions: sessions}
		tx.put(kindOperator, name, o)
		out = *o
		return nil
	})
	return out, err
}

// RemoveOperator deletes an operator and returns what it was. The last
// admin cannot be removed: nobody could manage the registry after it.
func (r *Registry) RemoveOperator(name string) (fleet.Operator, error) {
	var out fleet.Operator
	err := r.update(func(tx *regTx) error {
		o, ok := r.data.Operators[name]
		if !ok {
			if tx.mayReload(kindOperator, name) {
				return reloadError{kindOperator, name}
			}
			return fmt.Errorf("operator %s: %w", name, ErrNotFound)
		}
		if o.Role == fleet.RoleAdmin {
			admins := 0
			for _, x := range r.data.Operators {
				if x.Role == fleet.RoleAdmin {
					admins++
				}
			}
			if admins == 1 {
				return fmt.Errorf("operator %s is the last admin; add another admin first: %w", name, ErrConflict)
			}
		}
		tx.del(kindOperator, name)
		out = *o
		return nil
	})
	return out, err
}

// AddMachines registers many machines, replacing entries with the same
// id. Nothing is changed unless every entry is valid.
func (r *Registry) AddMachines(reqs []fleet.MachineRequest, by string) (int, error) {
	n, _, err := r.ImportMachines(reqs, by)
	return n, err
}

// ImportMachines is [Registry.AddMachines] that also returns the ids whose
// key it replaced. Every entry is checked first. With the registry file
// the machines are written at once (all or none); with the bucket each is
// its own compare-and-set write, so a failure part-way leaves the ones
// before it registered, and the error says how many.
func (r *Registry) ImportMachines(reqs []fleet.MachineRequest, by string) (int, []string, error) {
	for i, q := range reqs {
		if err := fleet.ValidateMachineID(q.ID); err != nil {
			return 0, nil, invalidf("machine %d: %v", i, err)
		}
		if !nkeys.IsValidPublicUserKey(q.Key) {
			return 0, nil, invalidf("machine %s: key %q is not a public user nkey", q.ID, q.Key)
		}
		if err := validateLabels(q.Labels); err != nil {
			return 0, nil, err
		}
		if err := validateSite(q.Site); err != nil {
			return 0, nil, fmt.Errorf("machine %s: %w", q.ID, err)
		}
	}
	rekeyed := map[string]bool{}
	plan := func(tx *regTx, q fleet.MachineRequest) {
		tx.put(kindMachine, q.ID, &fleet.Machine{ID: q.ID, Key: q.Key, Labels: copyLabels(q.Labels), Site: q.Site, AddedAt: tx.r.now().UTC(), AddedBy: by})
		tx.dropPending(q.ID)
	}
	r.wmu.Lock()
	file := r.file
	r.wmu.Unlock()
	if file {
		err := r.update(func(tx *regTx) error {
			last := map[string]string{}
			for _, q := range reqs {
				plan(tx, q)
				last[q.ID] = q.Key
			}
			for id, key := range last {
				if old, had := tx.r.data.Machines[id]; had && old.Key != key {
					rekeyed[id] = true
				}
			}
			return nil
		})
		if err != nil {
			return 0, nil, err
		}
		return len(reqs), sortedKeys(rekeyed), nil
	}
	plans := make([]func(tx *regTx) error, len(reqs))
	for i, q := range reqs {
		plans[i] = func(tx *regTx) error {
			if old, had := tx.r.data.Machines[q.ID]; had && old.Key != q.Key {
				rekeyed[q.ID] = true
			}
			plan(tx, q)
			return nil
		}
	}
	if n, err := r.updateMany(plans); err != nil {
		return n, sortedKeys(rekeyed), fmt.Errorf("%d of %d machines registered before machine %s failed: %w", n, len(reqs), reqs[n].ID, err)
	}
	return len(reqs), sortedKeys(rekeyed), nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
