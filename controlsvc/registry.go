package controlsvc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nkeys"
)

// RegistryFile is the registry's file name in the data directory.
const RegistryFile = "registry.json"

// MaxPending bounds the pending list so a flood of unknown machines cannot
// grow it without limit; the oldest entry is dropped first.
const MaxPending = 10000

// Registry is the whitelist: registered machines with their keys and labels,
// machines waiting to be accepted, and operators. Every change is written
// to disk before it is acknowledged.
type Registry struct {
	path string
	mu   sync.RWMutex
	data registryData
	now  func() time.Time
	// pendingDirty is set when pending entries changed in memory only;
	// FlushPending (called periodically) writes them.
	pendingDirty bool
	// changes counts writes (and undone changes), so caches of what the
	// registry says (labels in presence snapshots) know when to renew.
	changes atomic.Uint64
}

type registryData struct {
	Version   int                        `json:"version"`
	Machines  map[string]*fleet.Machine  `json:"machines"`
	Pending   map[string]*fleet.Pending  `json:"pending"`
	Operators map[string]*fleet.Operator `json:"operators"`
}

// Errors callers branch on.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrConflict marks a request that does not match the current state.
	ErrConflict = errors.New("conflict")
	// ErrInvalid marks a request the registry refuses as malformed (a bad
	// id, key, role or label), as opposed to a failure to store it.
	ErrInvalid = errors.New("invalid")
)

// invalidError is a validation error: its message is the cause alone, and
// errors.Is(err, ErrInvalid) holds.
type invalidError struct{ err error }

func (e invalidError) Error() string       { return e.err.Error() }
func (e invalidError) Unwrap() []error     { return []error{e.err, ErrInvalid} }
func invalid(err error) error              { return invalidError{err} }
func invalidf(f string, args ...any) error { return invalidError{fmt.Errorf(f, args...)} }

// OpenRegistry loads the registry file at path, or starts an empty one when
// the file does not exist yet.
func OpenRegistry(path string) (*Registry, error) {
	r := &Registry{path: path, now: time.Now}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read registry: %w", err)
	default:
		if err := decodeRegistry(b, &r.data); err != nil {
			return nil, fmt.Errorf("registry file %s: %w (restore it from a backup, or move it away to start with an empty registry)", path, err)
		}
	}
	r.data.Version = 1
	if r.data.Machines == nil {
		r.data.Machines = map[string]*fleet.Machine{}
	}
	if r.data.Pending == nil {
		r.data.Pending = map[string]*fleet.Pending{}
	}
	if r.data.Operators == nil {
		r.data.Operators = map[string]*fleet.Operator{}
	}
	return r, nil
}

// registryFields are the registry file's top-level fields, and whether
// each must be present and not null. A file without its machines or
// operators is damaged (cc-control always writes them): loading it as an
// empty fleet would make the loss permanent at the next write.
var registryFields = []struct {
	name     string
	required bool
}{{"version", true}, {"machines", true}, {"operators", true}, {"pending", false}}

// decodeRegistry parses a registry file, refusing unknown fields (a
// misspelt "machines" would otherwise be ignored) and missing or null
// required ones, and checks every entry.
func decodeRegistry(b []byte, d *registryData) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return fmt.Errorf("not valid JSON: %w", err)
	}
	if top == nil {
		return errors.New("it holds null, not a registry object")
	}
	known := make([]string, 0, len(registryFields))
	for _, f := range registryFields {
		known = append(known, f.name)
	}
	for name := range top {
		if !slices.Contains(known, name) {
			return fmt.Errorf("unknown top-level field %q (the fields are %s)", name, strings.Join(known, ", "))
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(d); err != nil {
		return fmt.Errorf("not valid JSON: %w", err)
	}
	if err := d.validate(); err != nil {
		return err
	}
	for _, f := range registryFields {
		if v, ok := top[f.name]; f.required && (!ok || string(bytes.TrimSpace(v)) == "null") {
			return fmt.Errorf("the top-level field %q is missing or null", f.name)
		}
	}
	if d.Version != 1 {
		return fmt.Errorf("version %d is not one this cc-control reads (1)", d.Version)
	}
	return nil
}

func (d *registryData) validate() error {
	for id, m := range d.Machines {
		if m == nil || m.ID != id {
			return fmt.Errorf("machine entry %q is malformed", id)
		}
		if err := fleet.ValidateMachineID(id); err != nil {
			return err
		}
		if !nkeys.IsValidPublicUserKey(m.Key) {
			return fmt.Errorf("machine %q has an invalid key %q", id, m.Key)
		}
	}
	for name, o := range d.Operators {
		if o == nil || o.Name != name || !fleet.ValidRole(o.Role) || !nkeys.IsValidPublicUserKey(o.Key) {
			return fmt.Errorf("operator entry %q is malformed", name)
		}
	}
	for id, p := range d.Pending {
		if p == nil {
			return fmt.Errorf("pending entry %q is malformed", id)
		}
	}
	return nil
}

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

// commitLocked writes the registry; when the write fails it runs undo, so
// a change that is not on disk does not take effect either.
func (r *Registry) commitLocked(undo func()) error {
	if err := r.saveLocked(); err != nil {
		undo()
		r.changes.Add(1)
		return fmt.Errorf("registry not changed: %w", err)
	}
	return nil
}

// FlushPending writes pending entries recorded since the last write.
func (r *Registry) FlushPending() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.pendingDirty {
		return nil
	}
	return r.saveLocked()
}

// Machine returns a copy of the registered machine id.
func (r *Registry) Machine(id string) (fleet.Machine, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, ok := r.data.Machines[id]
	if !ok {
		return fleet.Machine{}, false
	}
	return copyMachine(m), true
}

// Machines lists registered machines sorted by id.
func (r *Registry) Machines() []fleet.Machine {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]fleet.Machine, 0, len(r.data.Machines))
	for _, m := range r.data.Machines {
		out = append(out, copyMachine(m))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Labels returns the labels of machine id (nil when unknown).
func (r *Registry) Labels(id string) map[string]string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if m, ok := r.data.Machines[id]; ok {
		return copyLabels(m.Labels)
	}
	return nil
}

// AddMachine registers id with key and labels. It replaces an existing
// entry's key and labels when replace is true.
func (r *Registry) AddMachine(id, key string, labels map[string]string, by string, replace bool) (fleet.Machine, error) {
	if err := fleet.ValidateMachineID(id); err != nil {
		return fleet.Machine{}, invalid(err)
	}
	if !nkeys.IsValidPublicUserKey(key) {
		return fleet.Machine{}, invalidf("key %q is not a public user nkey (56 characters starting with U; cc-agent --print-key shows it)", key)
	}
	if err := validateLabels(labels); err != nil {
		return fleet.Machine{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old, had := r.data.Machines[id]
	if had && !replace {
		return fleet.Machine{}, fmt.Errorf("machine %s is already registered (key %s): %w", id, old.Key, ErrExists)
	}
	for _, o := range r.data.Operators {
		if o.Key == key {
			return fleet.Machine{}, fmt.Errorf("key %s belongs to operator %s; a machine needs a key of its own: %w", key, o.Name, ErrExists)
		}
	}
	oldPending, hadPending := r.data.Pending[id]
	m := &fleet.Machine{ID: id, Key: key, Labels: copyLabels(labels), AddedAt: r.now().UTC(), AddedBy: by}
	r.data.Machines[id] = m
	delete(r.data.Pending, id)
	err := r.commitLocked(func() {
		restore(r.data.Machines, id, old, had)
		restore(r.data.Pending, id, oldPending, hadPending)
	})
	if err != nil {
		return fleet.Machine{}, err
	}
	return copyMachine(m), nil
}

// Accept registers the pending machine id with the key it presented. When
// wantKey is set, the pending key must be that one: an operator accepts the
// key that was shown, not one another client slipped in since.
func (r *Registry) Accept(id, wantKey, by string) (fleet.Machine, error) {
	r.mu.RLock()
	p, ok := r.data.Pending[id]
	var key string
	if ok {
		key = p.Key
	}
	r.mu.RUnlock()
	if !ok {
		return fleet.Machine{}, fmt.Errorf("machine %s is not pending (list pending machines with: cc-bench machines pending): %w", id, ErrNotFound)
	}
	if wantKey != "" && wantKey != key {
		return fleet.Machine{}, fmt.Errorf("machine %s is pending with key %s, not %s; check which host is asking before accepting: %w", id, key, wantKey, ErrConflict)
	}
	labels := r.Labels(id)
	return r.AddMachine(id, key, labels, by, true)
}

// RemoveMachine deletes id from the registry (and from pending).
func (r *Registry) RemoveMachine(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, reg := r.data.Machines[id]
	p, pend := r.data.Pending[id]
	if !reg && !pend {
		return fmt.Errorf("machine %s is neither registered nor pending: %w", id, ErrNotFound)
	}
	delete(r.data.Machines, id)
	delete(r.data.Pending, id)
	return r.commitLocked(func() {
		restore(r.data.Machines, id, m, reg)
		restore(r.data.Pending, id, p, pend)
	})
}

// Label sets and removes labels on machine id.
func (r *Registry) Label(id string, set map[string]string, remove []string) (fleet.Machine, error) {
	if err := validateLabels(set); err != nil {
		return fleet.Machine{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.data.Machines[id]
	if !ok {
		return fleet.Machine{}, fmt.Errorf("machine %s is not registered: %w", id, ErrNotFound)
	}
	old := m.Labels
	m.Labels = copyLabels(old)
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	for k, v := range set {
		m.Labels[k] = v
	}
	for _, k := range remove {
		delete(m.Labels, k)
	}
	if err := r.commitLocked(func() { m.Labels = old }); err != nil {
		return fleet.Machine{}, err
	}
	return copyMachine(m), nil
}

// RecordPending notes a refused machine so an operator can accept it. It
// only changes memory: [Registry.FlushPending], run periodically, writes
// it, so a flood of unknown machines never stalls the callout on disk.
func (r *Registry) RecordPending(id, key, ip, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now().UTC()
	p, ok := r.data.Pending[id]
	if ok && p.Key == key {
		p.LastSeen, p.IP, p.Reason = now, ip, reason
		p.Attempts++
		return
	}
	if !ok && len(r.data.Pending) >= MaxPending {
		r.dropOldestPendingLocked()
	}
	r.data.Pending[id] = &fleet.Pending{ID: id, Key: key, IP: ip, FirstSeen: now, LastSeen: now, Attempts: 1, Reason: reason}
	r.pendingDirty = true
}

func (r *Registry) dropOldestPendingLocked() {
	var oldest string
	var t time.Time
	for id, p := range r.data.Pending {
		if oldest == "" || p.LastSeen.Before(t) {
			oldest, t = id, p.LastSeen
		}
	}
	delete(r.data.Pending, oldest)
}

// Pending lists machines waiting to be accepted, sorted by id.
func (r *Registry) Pending() []fleet.Pending {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]fleet.Pending, 0, len(r.data.Pending))
	for _, p := range r.data.Pending {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// OperatorByKey finds the operator whose public key is key.
func (r *Registry) OperatorByKey(key string) (fleet.Operator, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, o := range r.data.Operators {
		if o.Key == key {
			return *o, true
		}
	}
	return fleet.Operator{}, false
}

// Operators lists operators sorted by name.
func (r *Registry) Operators() []fleet.Operator {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]fleet.Operator, 0, len(r.data.Operators))
	for _, o := range r.data.Operators {
		out = append(out, *o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// AddOperator registers an operator.
func (r *Registry) AddOperator(name, key, role string) (fleet.Operator, error) {
	if err := fleet.ValidateName("operator name", name); err != nil {
		return fleet.Operator{}, invalid(err)
	}
	if !fleet.ValidRole(role) {
		return fleet.Operator{}, invalidf("role %q is unknown; use %s or %s", role, fleet.RoleAdmin, fleet.RoleViewer)
	}
	if !nkeys.IsValidPublicUserKey(key) {
		return fleet.Operator{}, invalidf("key %q is not a public user nkey (56 characters starting with U)", key)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.data.Operators[name]; ok {
		return fleet.Operator{}, fmt.Errorf("operator %s: %w", name, ErrExists)
	}
	for _, o := range r.data.Operators {
		if o.Key == key {
			return fleet.Operator{}, fmt.Errorf("key %s already belongs to operator %s: %w", key, o.Name, ErrExists)
		}
	}
	for _, m := range r.data.Machines {
		if m.Key == key {
			return fleet.Operator{}, fmt.Errorf("key %s belongs to machine %s; an operator needs a key of its own: %w", key, m.ID, ErrExists)
		}
	}
	o := &fleet.Operator{Name: name, Key: key, Role: role, AddedAt: r.now().UTC()}
	r.data.Operators[name] = o
	if err := r.commitLocked(func() { delete(r.data.Operators, name) }); err != nil {
		return fleet.Operator{}, err
	}
	return *o, nil
}

// RemoveOperator deletes an operator and returns what it was. The last
// admin cannot be removed: nobody could manage the registry after it.
func (r *Registry) RemoveOperator(name string) (fleet.Operator, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.data.Operators[name]
	if !ok {
		return fleet.Operator{}, fmt.Errorf("operator %s: %w", name, ErrNotFound)
	}
	if o.Role == fleet.RoleAdmin {
		admins := 0
		for _, x := range r.data.Operators {
			if x.Role == fleet.RoleAdmin {
				admins++
			}
		}
		if admins == 1 {
			return fleet.Operator{}, fmt.Errorf("operator %s is the last admin; add another admin first: %w", name, ErrConflict)
		}
	}
	delete(r.data.Operators, name)
	if err := r.commitLocked(func() { r.data.Operators[name] = o }); err != nil {
		return fleet.Operator{}, err
	}
	return *o, nil
}

func validateLabels(l map[string]string) error {
	for k, v := range l {
		if err := fleet.ValidateName("label key", k); err != nil {
			return invalid(err)
		}
		if len(v) > 256 {
			return invalidf("label %s: value is %d characters long; at most 256 are allowed", k, len(v))
		}
	}
	return nil
}

// restore puts back a map entry as it was before a failed change.
func restore[V any](m map[string]V, k string, v V, had bool) {
	if had {
		m[k] = v
	} else {
		delete(m, k)
	}
}

func copyLabels(l map[string]string) map[string]string {
	if l == nil {
		return nil
	}
	c := make(map[string]string, len(l))
	for k, v := range l {
		c[k] = v
	}
	return c
}

func copyMachine(m *fleet.Machine) fleet.Machine {
	c := *m
	c.Labels = copyLabels(m.Labels)
	return c
}

// Operator returns the operator called name.
func (r *Registry) Operator(name string) (fleet.Operator, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	o, ok := r.data.Operators[name]
	if !ok {
		return fleet.Operator{}, false
	}
	return *o, true
}

// AddMachines registers many machines with one write, replacing entries
// with the same id. Nothing is changed unless every entry is valid and the
// write succeeds.
func (r *Registry) AddMachines(reqs []fleet.MachineRequest, by string) (int, error) {
	for i, q := range reqs {
		if err := fleet.ValidateMachineID(q.ID); err != nil {
			return 0, invalidf("machine %d: %v", i, err)
		}
		if !nkeys.IsValidPublicUserKey(q.Key) {
			return 0, invalidf("machine %s: key %q is not a public user nkey", q.ID, q.Key)
		}
		if err := validateLabels(q.Labels); err != nil {
			return 0, err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	type prev struct {
		m       *fleet.Machine
		had     bool
		p       *fleet.Pending
		hadPend bool
	}
	undo := make(map[string]prev, len(reqs))
	now := r.now().UTC()
	for _, q := range reqs {
		if _, seen := undo[q.ID]; !seen {
			m, had := r.data.Machines[q.ID]
			p, hadPend := r.data.Pending[q.ID]
			undo[q.ID] = prev{m, had, p, hadPend}
		}
		r.data.Machines[q.ID] = &fleet.Machine{ID: q.ID, Key: q.Key, Labels: copyLabels(q.Labels), AddedAt: now, AddedBy: by}
		delete(r.data.Pending, q.ID)
	}
	err := r.commitLocked(func() {
		for id, u := range undo {
			restore(r.data.Machines, id, u.m, u.had)
			restore(r.data.Pending, id, u.p, u.hadPend)
		}
	})
	if err != nil {
		return 0, err
	}
	return len(reqs), nil
}
