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
// machines waiting to be accepted, operators and apps. It is kept in
// memory, where the callout reads it without touching the network, and in
// a store: the JetStream KV bucket shared by every control-service replica
// (registry_kv.go), or the legacy registry.json (registry_store.go). Every
// change is in the store before it takes effect.
type Registry struct {
	path string
	// mu guards the memory: the callout reads under it, so nothing waits
	// on the network while holding it.
	mu   sync.RWMutex
	data registryData
	// revs is the KV revision held for each entry's key (and, until the
	// bucket's watcher passes them, for entries deleted here).
	revs map[string]uint64
	now  func() time.Time
	// wmu serialises writers (operations and the pending flush), which
	// write the store outside mu.
	wmu sync.Mutex
	// file is set when the store is the registry file, kv when it is the
	// KV bucket; neither before the service opened the registry.
	file bool
	kv   *kvStore
	// pendingDirty is set when pending entries changed in memory only;
	// FlushPending (called periodically) writes them. With the bucket,
	// dirtyPending and gonePending name them (registry_pending.go):
	// dirtyPending maps an id to the pendingSeq of its last change, so a
	// flush forgets it only when nothing changed it during the write.
	pendingDirty bool
	dirtyPending map[string]uint64
	pendingSeq   uint64
	gonePending  map[string]bool
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
	// Denied is the deny list (registry_deny.go), by entry
	// (fleet.Denied.Entry: "id:<id>" or "key:<key>").
	Denied map[string]*fleet.Denied `json:"denied,omitempty"`
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
// the file does not exist yet. Its changes are written to the file: the
// store of a control service whose broker has no JetStream.
func OpenRegistry(path string) (*Registry, error) {
	r := newRegistry(time.Now)
	r.path = path
	if err := readRegistryFile(path, &r.data); err != nil {
		return nil, err
	}
	r.data.fill()
	r.file = true
	return r, nil
}

// newRegistry is an empty registry with no store yet: reads answer empty,
// writes fail until a store is attached.
func newRegistry(now func() time.Time) *Registry {
	r := &Registry{now: now, revs: map[string]uint64{}, dirtyPending: map[string]uint64{}, gonePending: map[string]bool{}}
	r.data.fill()
	return r
}

// readRegistryFile loads the file at path into d; a missing file leaves d
// as it is.
func readRegistryFile(path string, d *registryData) error {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("read registry: %w", err)
	}
	if err := decodeRegistry(b, d); err != nil {
		return fmt.Errorf("registry file %s: %w (restore it from a backup, or move it away to start with an empty registry)", path, err)
	}
	return nil
}

func (d *registryData) fill() {
	d.Version = 1
	if d.Machines == nil {
		d.Machines = map[string]*fleet.Machine{}
	}
	if d.Pending == nil {
		d.Pending = map[string]*fleet.Pending{}
	}
	if d.Operators == nil {
		d.Operators = map[string]*fleet.Operator{}
	}
	if d.Apps == nil {
		d.Apps = map[string]*fleet.App{}
	}
	if d.Denied == nil {
		d.Denied = map[string]*fleet.Denied{}
	}
}

// registryFields are the registry file's top-level fields, and whether
// each must be present and not null. A file without its machines or
// operators is damaged (cc-control always writes them): loading it as an
// empty fleet would make the loss permanent at the next write.
var registryFields = []struct {
	name     string
	required bool
}{{"version", true}, {"machines", true}, {"operators", true}, {"pending", false}, {"apps", false}, {"denied", false}}

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
		if err := validatePending(id, p); err != nil {
			return err
		}
	}
	for entry, x := range d.Denied {
		if err := validateDenied(entry, x); err != nil {
			return err
		}
	}
	return validateApps(d.Apps)
}

// validatePending checks pending entry id as the callout records one: a
// machine id, the entry naming it, every key a public user nkey (at most
// [fleet.MaxPendingKeys]) and every site a site name. A pending id is a
// bucket key and a subject: an unchecked one may be longer than the
// broker's control line.
func validatePending(id string, p *fleet.Pending) error {
	if p == nil {
		return fmt.Errorf("pending entry %.40q is malformed (null)", id)
	}
	if err := fleet.ValidateMachineID(id); err != nil {
		return fmt.Errorf("pending entry: %w", err)
	}
	if p.ID != id {
		return fmt.Errorf("pending entry %q holds id %.40q: they must be the same", id, p.ID)
	}
	if !nkeys.IsValidPublicUserKey(p.Key) {
		return fmt.Errorf("pending machine %q has an invalid key %.60q (a public user nkey starts with U)", id, p.Key)
	}
	if len(p.Keys) > fleet.MaxPendingKeys {
		return fmt.Errorf("pending machine %q lists %d keys; at most %d are kept", id, len(p.Keys), fleet.MaxPendingKeys)
	}
	sites := []string{p.Site}
	for _, k := range p.Keys {
		if !nkeys.IsValidPublicUserKey(k.Key) {
			return fmt.Errorf("pending machine %q lists an invalid key %.60q (a public user nkey starts with U)", id, k.Key)
		}
		sites = append(sites, k.Site)
	}
	for _, site := range sites {
		if site == "" {
			continue
		}
		if err := fleet.ValidateSiteName(site); err != nil {
			return fmt.Errorf("pending machine %q: %w", id, err)
		}
	}
	return nil
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
