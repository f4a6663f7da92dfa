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
	// onSites, when set, is told (under the registry's lock; it must not
	// block) which remote sites' sets of machines a change altered.
	onSites func(sites ...string)
	// sortedIDs caches the machine ids in order for list pages, valid
	// while changes is sortedAt.
	sortedIDs []string
	sortedAt  uint64
}

type registryData struct {
	Version   int                        `json:"version"`
	Machines  map[string]*fleet.Machine  `json:"machines"`
	Pending   map[string]*fleet.Pending  `json:"pending"`
	Operators map[string]*fleet.Operator `json:"operators"`
	// Apps are the apps whose sessions may join (apps.go).
	Apps map[string]*fleet.App `json:"apps,omitempty"`
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
	if r.data.Apps == nil {
		r.data.Apps = map[string]*fleet.App{}
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
}{{"version", true}, {"machines", true}, {"operators", true}, {"pending", false}, {"apps", false}}

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
		if m.Site != "" {
			if err := fleet.ValidateSiteName(m.Site); err != nil {
				return fmt.Errorf("machine %q: %w", id, err)
			}
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
	return validateApps(d.Apps)
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
	if err := validateSite(site); err != nil {
		return fleet.MachineChange{}, err
	}
	if err := fleet.ValidateMachineID(id); err != nil {
		return fleet.MachineChange{}, invalid(err)
	}
	if !nkeys.IsValidPublicUserKey(key) {
		return fleet.MachineChange{}, invalidf("key %q is not a public user nkey (56 characters starting with U; cc-agent --print-key shows it)", key)
	}
	if err := validateLabels(labels); err != nil {
		return fleet.MachineChange{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.setMachineLocked(id, key, site, labels, by, replace)
}

func (r *Registry) setMachineLocked(id, key, site string, labels map[string]string, by string, replace bool) (fleet.MachineChange, error) {
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
	oldPending, hadPending := r.data.Pending[id]
	m := &fleet.Machine{ID: id, Key: key, Labels: copyLabels(labels), Site: site, AddedAt: r.now().UTC(), AddedBy: by}
	r.data.Machines[id] = m
	delete(r.data.Pending, id)
	err := r.commitLocked(func() {
		restore(r.data.Machines, id, old, had)
		restore(r.data.Pending, id, oldPending, hadPending)
	})
	if err != nil {
		return fleet.MachineChange{}, err
	}
	if !had {
		r.sitesChangedLocked(site)
	} else if old.Site != site {
		r.sitesChangedLocked(old.Site, site)
	}
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
func (r *Registry) AcceptAt(id, want, site, by string) (fleet.MachineChange, error) {
	if err := validateSite(site); err != nil {
		return fleet.MachineChange{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.data.Pending[id]
	if !ok {
		return fleet.MachineChange{}, fmt.Errorf("machine %s is not pending (list pending machines with: cc-bench machines pending): %w", id, ErrNotFound)
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
	return r.setMachineLocked(id, k.Key, site, labels, by, true)
}

// pickPendingKey chooses the key of p that want names (see Accept).
func pickPendingKey(p *fleet.Pending, want string) (fleet.PendingKey, error) {
	keys := pendingKeys(p)
	if want == "" {
		if len(keys) == 1 && p.KeysDropped == 0 {
			return keys[0], nil
		}
		return fleet.PendingKey{}, fmt.Errorf("machine %s was tried with %d different keys%s, so someone other than the machine may be asking (%s); "+
			"check the key on the host itself (cc-agent --print-key) and accept that one with: cc-bench machines accept %s --pubkey KEY: %w",
			p.ID, len(keys)+p.KeysDropped, droppedNote(p), listKeys(keys), p.ID, ErrConflict)
	}
	var found []fleet.PendingKey
	for _, k := range keys {
		if k.Key == want {
			return k, nil
		}
		if strings.HasPrefix(k.Key, want) {
			found = append(found, k)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return fleet.PendingKey{}, fmt.Errorf("no key that tried machine %s starts with %q; the keys that tried it are %s; "+
			"if the host's key (cc-agent --print-key) is not among them, register it in full with: cc-bench machines add %s --pubkey KEY: %w",
			p.ID, want, listKeys(keys), p.ID, ErrConflict)
	}
	return fleet.PendingKey{}, invalidf("%q is the start of %d keys that tried machine %s (%s); give more of the key", want, len(found), p.ID, listKeys(found))
}

// pendingKeys is p's keys, or its one Key for an entry recorded before
// entries kept several.
func pendingKeys(p *fleet.Pending) []fleet.PendingKey {
	if len(p.Keys) == 0 && p.Key != "" {
		return []fleet.PendingKey{{Key: p.Key, IP: p.IP, FirstSeen: p.FirstSeen, LastSeen: p.LastSeen, Attempts: p.Attempts, Reason: p.Reason, Site: p.Site}}
	}
	return p.Keys
}

func droppedNote(p *fleet.Pending) string {
	if p.KeysDropped == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d not kept)", p.KeysDropped)
}

// listKeys names keys for an error message (one line: it travels in a
// header).
func listKeys(keys []fleet.PendingKey) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		from := orUnknown(k.IP)
		if k.Site != "" {
			from += " as reported by site " + k.Site
		}
		parts[i] = fmt.Sprintf("%s: %d attempt(s), last from %s", k.Key, k.Attempts, from)
	}
	return strings.Join(parts, "; ")
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown address"
	}
	return s
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
	if err := r.commitLocked(func() {
		restore(r.data.Machines, id, m, reg)
		restore(r.data.Pending, id, p, pend)
	}); err != nil {
		return err
	}
	if reg {
		r.sitesChangedLocked(m.Site)
	}
	return nil
}

// sitesChangedLocked tells onSites about the remote sites among sites.
func (r *Registry) sitesChangedLocked(sites ...string) {
	if r.onSites == nil {
		return
	}
	var out []string
	for _, s := range sites {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) > 0 {
		r.onSites(out...)
	}
}

// SiteMachines lists the ids of the machines registered to remote site,
// sorted.
func (r *Registry) SiteMachines(site string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for id, m := range r.data.Machines {
		if m.Site == site {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

func validateSite(site string) error {
	if site == "" {
		return nil
	}
	if err := fleet.ValidateSiteName(site); err != nil {
		return invalid(err)
	}
	return nil
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

// RecordPendingAt notes a refused machine so an operator can accept it,
// for an attempt that remote site's broker reported ("": the hub's own
// brokers). It only changes memory: [Registry.FlushPending], run
// periodically, writes it, so a flood of unknown machines never stalls
// the callout on disk.
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
	ids := make([]string, 0, len(r.data.Pending))
	for id := range r.data.Pending {
		if id > after {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	more := len(ids) > limit
	if more {
		ids = ids[:limit]
	}
	out := make([]fleet.Pending, 0, len(ids))
	for _, id := range ids {
		p := r.data.Pending[id]
		c := *p
		c.Keys = slices.Clone(pendingKeys(p))
		out = append(out, c)
	}
	return out, more, len(r.data.Pending)
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
	o := &fleet.Operator{Name: name, Key: key, Role: role, AddedAt: r.now().UTC(), Sessions: sessions}
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
	n, _, err := r.ImportMachines(reqs, by)
	return n, err
}

// ImportMachines is [Registry.AddMachines] that also returns the ids whose
// key it replaced.
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
		r.data.Machines[q.ID] = &fleet.Machine{ID: q.ID, Key: q.Key, Labels: copyLabels(q.Labels), Site: q.Site, AddedAt: now, AddedBy: by}
		delete(r.data.Pending, q.ID)
	}
	err := r.commitLocked(func() {
		for id, u := range undo {
			restore(r.data.Machines, id, u.m, u.had)
			restore(r.data.Pending, id, u.p, u.hadPend)
		}
	})
	if err != nil {
		return 0, nil, err
	}
	var rekeyed, sites []string
	for id, u := range undo {
		if u.had && u.m.Key != r.data.Machines[id].Key {
			rekeyed = append(rekeyed, id)
		}
		if !u.had || u.m.Site != r.data.Machines[id].Site {
			sites = append(sites, r.data.Machines[id].Site)
			if u.had {
				sites = append(sites, u.m.Site)
			}
		}
	}
	r.sitesChangedLocked(sites...)
	sort.Strings(rekeyed)
	return len(reqs), rekeyed, nil
}
