package controlsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go/jetstream"
)

// The first start of a control service that keeps the registry in
// JetStream imports the registry.json an earlier version kept (the file
// is kept as a backup, never deleted), and records the import in the
// bucket's meta.import key; operators' own backups go through the control
// API (registry export/import, api_registry.go). Both write entries as
// the file holds them, through restore.

// metaImportKey records the import of registry.json into the bucket.
const metaImportKey = kindMeta + ".import"

// importMeta is the value of metaImportKey.
type importMeta struct {
	// State is "importing" until every entry is written, then "done": a
	// start that finds "importing" (the last one stopped part-way) goes
	// on with the import.
	State     string    `json:"state"`
	File      string    `json:"file"`
	At        time.Time `json:"at"`
	Machines  int       `json:"machines"`
	Operators int       `json:"operators"`
	Pending   int       `json:"pending"`
	Apps      int       `json:"apps"`
}

// restoreMode says what restore does with an entry the registry holds
// with other contents.
type restoreMode int

const (
	restoreKeep    restoreMode = iota // keep the registry's (the first-start import)
	restoreReplace                    // take the file's (an operator's restore)
)

// restoreResult counts what restore did, per kind, and names the machines
// and operators whose key it replaced (their connections are closed) and
// the apps it replaced.
type restoreResult struct {
	Added, Changed, Skipped map[string]int
	Rekeyed                 []string // machine ids
	Operators               []string // operators replaced
	Apps                    []string // apps replaced
	// OperatorNotes says, per operator added or replaced, its name and
	// role (and what changed), for the audit.
	OperatorNotes []string
}

func newRestoreResult() restoreResult {
	return restoreResult{Added: map[string]int{}, Changed: map[string]int{}, Skipped: map[string]int{}}
}

// importFile imports <data>/registry.json into an empty bucket (see
// above). A damaged file stops the start, saying so, as before.
func (r *Registry) importFile(ctx context.Context, s *kvStore, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	var meta importMeta
	var rev uint64
	e, err := s.kv.Get(ctx, metaImportKey)
	switch {
	case err == nil:
		if err := json.Unmarshal(e.Value(), &meta); err != nil {
			return fmt.Errorf("registry bucket key %s is malformed: %w", metaImportKey, err)
		}
		if meta.State == "done" {
			return nil
		}
		rev = e.Revision()
	case errors.Is(err, jetstream.ErrKeyNotFound):
		if !r.empty() {
			if _, err := os.Stat(r.path); err == nil {
				log.Info("registry.json not imported: the JetStream bucket holds the registry already", "file", r.path, "bucket", RegistryBucket)
			}
			return nil
		}
	default:
		return fmt.Errorf("read %s of the registry bucket: %w", metaImportKey, err)
	}
	if _, err := os.Stat(r.path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var d registryData
	if err := readRegistryFile(r.path, &d); err != nil {
		return err
	}
	d.fill()
	meta = importMeta{State: "importing", File: r.path, At: r.now().UTC()}
	b, _ := json.Marshal(meta)
	if rev == 0 {
		if _, err = s.kv.Create(ctx, metaImportKey, b); errors.Is(err, jetstream.ErrKeyExists) {
			err = nil // another replica is importing too: both write what is missing
		}
		if err != nil {
			return fmt.Errorf("record the import of %s: %w", r.path, err)
		}
	}
	res, err := r.restore(&d, restoreKeep)
	if err != nil {
		return fmt.Errorf("import %s into the registry bucket (the next start goes on with it): %w", r.path, err)
	}
	meta.State = "done"
	meta.Machines, meta.Operators, meta.Pending, meta.Apps = len(d.Machines), len(d.Operators), len(d.Pending), len(d.Apps)
	b, _ = json.Marshal(meta)
	cctx, cancel2 := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel2()
	if _, err := s.kv.Put(cctx, metaImportKey, b); err != nil {
		return fmt.Errorf("record the import of %s: %w", r.path, err)
	}
	log.Info(fmt.Sprintf("imported %d machines, %d operators, %d pending machines and %d apps from %s (kept as a backup)",
		len(d.Machines), len(d.Operators), len(d.Pending), len(d.Apps), r.path),
		"bucket", RegistryBucket, "skipped", res.Skipped)
	return nil
}

// empty reports whether the registry holds nothing at all.
func (r *Registry) empty() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.data.Machines)+len(r.data.Operators)+len(r.data.Pending)+len(r.data.Apps) == 0
}

// restore writes the entries of d (checked, as a file's are) into the
// registry as they are: those missing are added, identical ones skipped,
// and those that differ kept (restoreKeep) or replaced (restoreReplace).
// Pending entries are only added, for ids neither pending nor registered.
// With the registry file it is one write; with the bucket one per entry.
func (r *Registry) restore(d *registryData, mode restoreMode) (restoreResult, error) {
	res := newRestoreResult()
	type entry struct {
		kind, id string
		val      any
	}
	var all []entry
	for _, kind := range []string{kindOperator, kindApp, kindMachine, kindPending, kindDeny} {
		var ids []string
		switch kind {
		case kindOperator:
			ids = slices.Sorted(maps.Keys(d.Operators))
		case kindApp:
			ids = slices.Sorted(maps.Keys(d.Apps))
		case kindMachine:
			ids = slices.Sorted(maps.Keys(d.Machines))
		case kindPending:
			ids = slices.Sorted(maps.Keys(d.Pending))
		case kindDeny:
			ids = slices.Sorted(maps.Keys(d.Denied))
		}
		for _, id := range ids {
			all = append(all, entry{kind, id, d.value(kind, id)})
		}
	}
	plan := func(tx *regTx, e entry) error {
		cur := tx.r.valueLocked(e.kind, e.id)
		switch {
		case cur == nil && e.kind == kindPending && tx.r.data.Machines[e.id] != nil:
			res.Skipped[e.kind]++
		case cur == nil: // written compare-and-set: one written meanwhile conflicts, is read, and the plan runs again
			if mode == restoreReplace {
				if err := tx.r.checkRestore(e.kind, e.id, e.val); err != nil {
					return err
				}
			}
			tx.put(e.kind, e.id, e.val)
			res.Added[e.kind]++
			if o, ok := e.val.(*fleet.Operator); ok {
				res.OperatorNotes = append(res.OperatorNotes, fmt.Sprintf("added operator %s (%s)", o.Name, o.Role))
			}
		case reflect.DeepEqual(cur, e.val) || mode == restoreKeep || e.kind == kindPending:
			res.Skipped[e.kind]++
		default:
			if err := tx.r.checkRestore(e.kind, e.id, e.val); err != nil {
				return err
			}
			tx.put(e.kind, e.id, e.val)
			res.Changed[e.kind]++
			switch old := cur.(type) {
			case *fleet.Machine:
				if old.Key != e.val.(*fleet.Machine).Key {
					res.Rekeyed = append(res.Rekeyed, e.id)
				}
			case *fleet.Operator:
				res.Operators = append(res.Operators, e.id)
				res.OperatorNotes = append(res.OperatorNotes, operatorChange(old, e.val.(*fleet.Operator)))
			case *fleet.App:
				res.Apps = append(res.Apps, e.id)
			}
		}
		return nil
	}
	r.wmu.Lock()
	file := r.file
	r.wmu.Unlock()
	if file {
		err := r.update(func(tx *regTx) error {
			res = newRestoreResult()
			for _, e := range all {
				if err := plan(tx, e); err != nil {
					return err
				}
			}
			return nil
		})
		return res, err
	}
	for i, e := range all {
		before := res
		before.Added, before.Changed, before.Skipped = maps.Clone(res.Added), maps.Clone(res.Changed), maps.Clone(res.Skipped)
		err := r.update(func(tx *regTx) error {
			res = before // a plan that runs again counts once
			res.Added, res.Changed, res.Skipped = maps.Clone(before.Added), maps.Clone(before.Changed), maps.Clone(before.Skipped)
			return plan(tx, e)
		})
		if err != nil {
			return res, fmt.Errorf("%d of %d entries done, then %s %s: %w", i, len(all), e.kind, e.id, err)
		}
	}
	return res, nil
}

// checkRestore refuses a replacement that would break the registry's
// rules: a key shared between a machine and an operator, or two
// operators.
func (r *Registry) checkRestore(kind, id string, val any) error {
	var key string
	switch v := val.(type) {
	case *fleet.Machine:
		key = v.Key
	case *fleet.Operator:
		key = v.Key
		if old := r.data.Operators[id]; old != nil && old.Role == fleet.RoleAdmin && v.Role != fleet.RoleAdmin {
			admins := 0
			for _, o := range r.data.Operators {
				if o.Role == fleet.RoleAdmin {
					admins++
				}
			}
			if admins == 1 {
				return fmt.Errorf("operator %s is the last admin; the import would make it a %s: %w", id, v.Role, ErrConflict)
			}
		}
	default:
		return nil
	}
	for _, o := range r.data.Operators {
		if o.Key == key && !(kind == kindOperator && o.Name == id) {
			return fmt.Errorf("%s %s: key %s belongs to operator %s: %w", kind, id, key, o.Name, ErrConflict)
		}
	}
	if kind == kindOperator {
		for _, m := range r.data.Machines {
			if m.Key == key {
				return fmt.Errorf("operator %s: key %s belongs to machine %s: %w", id, key, m.ID, ErrConflict)
			}
		}
	}
	return nil
}

// checkImportKeys refuses an import that would give one key to two
// operators, or to an operator and a machine, as operators.add and
// machines.add refuse it: the callout and the control API find an
// operator by its key. It looks at the registry as the import would
// leave it (the part's entries replacing those of the same name) and
// reports only clashes that involve one of the part's entries.
func (r *Registry) checkImportKeys(d *registryData) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	type holder struct {
		kind, id string
		inPart   bool
	}
	opKeys := map[string]holder{}
	for _, name := range slices.Sorted(maps.Keys(d.Operators)) {
		o := d.Operators[name]
		if h, ok := opKeys[o.Key]; ok {
			return fmt.Errorf("operators %s and %s of the import have the same key %s; every operator needs a key of its own: %w",
				h.id, name, o.Key, ErrConflict)
		}
		opKeys[o.Key] = holder{kindOperator, name, true}
	}
	for name, o := range r.data.Operators {
		if _, replaced := d.Operators[name]; replaced {
			continue
		}
		if h, ok := opKeys[o.Key]; ok && h.inPart {
			return fmt.Errorf("operator %s of the import has key %s, which belongs to operator %s; "+
				"every operator needs a key of its own (give it its own key, or import it under the name %s): %w",
				h.id, o.Key, name, name, ErrConflict)
		}
		opKeys[o.Key] = holder{kindOperator, name, false}
	}
	for _, id := range slices.Sorted(maps.Keys(d.Machines)) {
		m := d.Machines[id]
		if h, ok := opKeys[m.Key]; ok {
			return fmt.Errorf("machine %s of the import has key %s, which belongs to operator %s; a machine needs a key of its own: %w",
				id, m.Key, h.id, ErrConflict)
		}
	}
	for id, m := range r.data.Machines {
		if _, replaced := d.Machines[id]; replaced {
			continue
		}
		if h, ok := opKeys[m.Key]; ok && h.inPart {
			return fmt.Errorf("operator %s of the import has key %s, which belongs to machine %s; an operator needs a key of its own: %w",
				h.id, m.Key, id, ErrConflict)
		}
	}
	return nil
}

// operatorChange says how an import changed operator old into o.
func operatorChange(old, o *fleet.Operator) string {
	var what []string
	if old.Role != o.Role {
		what = append(what, fmt.Sprintf("role %s → %s", old.Role, o.Role))
	}
	if old.Key != o.Key {
		what = append(what, fmt.Sprintf("key %s → %s", old.Key, o.Key))
	}
	if len(what) == 0 {
		what = append(what, "other fields")
	}
	return fmt.Sprintf("changed operator %s (%s: %s)", o.Name, o.Role, strings.Join(what, ", "))
}
