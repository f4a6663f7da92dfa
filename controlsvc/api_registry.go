package controlsvc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Operators' own backups of the registry (cc-bench registry export and
// import): the export pages through every entry in registry.json's shape,
// no page larger than half the broker's payload limit; the import writes
// one part at a time (restore, registry_import.go).

// exportKinds are the kinds in export order (by name, so the cursors
// "<kind>.<id>" only grow), with their names in a registry file.
var exportKinds = []struct{ kind, field string }{
	{kindApp, "apps"}, {kindDeny, "denied"}, {kindMachine, "machines"}, {kindOperator, "operators"}, {kindPending, "pending"},
}

func fieldOf(kind string) string {
	for _, k := range exportKinds {
		if k.kind == kind {
			return k.field
		}
	}
	return kind
}

// apiRegistryExport answers OpRegistryExport.
func (s *Service) apiRegistryExport(_ context.Context, _ operatorIdentity, body []byte) (any, error) {
	var req fleet.RegistryExportRequest
	if len(body) > 0 {
		if err := decode(body, &req); err != nil {
			return nil, err
		}
	}
	limit, err := listLimit(fleet.ListRequest{Limit: req.Limit})
	if err != nil {
		return nil, err
	}
	return s.reg.exportAfter(req.After, limit, s.replyBudget())
}

// exportAfter is the page of entries after cursor after ("<kind>.<id>"):
// at most limit of them, whose JSON fits in budget bytes (at least one).
func (r *Registry) exportAfter(after string, limit, budget int) (fleet.RegistryExportPage, error) {
	start, afterID := 0, ""
	if after != "" {
		kind, id, ok := strings.Cut(after, ".")
		start = slices.IndexFunc(exportKinds, func(k struct{ kind, field string }) bool { return k.kind == kind })
		if !ok || start < 0 {
			return fleet.RegistryExportPage{}, fleet.Errorf(fleet.CodeBadRequest, "after %q is not a cursor this service gave (<kind>.<id>); start again without it", boundClientText(after))
		}
		afterID = id
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	var page fleet.RegistryExportPage
	page.Total = len(r.data.Machines) + len(r.data.Pending) + len(r.data.Operators) + len(r.data.Apps) + len(r.data.Denied)
	used, n, last := 0, 0, ""
	for ki := start; ki < len(exportKinds); ki++ {
		kind := exportKinds[ki].kind
		ids := r.idsLocked(kind)
		if ki == start && afterID != "" {
			ids = slices.DeleteFunc(ids, func(id string) bool { return id <= afterID })
		}
		sort.Strings(ids)
		for _, id := range ids {
			val := r.valueLocked(kind, id)
			b, err := json.Marshal(val)
			if err != nil {
				return page, fleet.Errorf(fleet.CodeInternal, "encode %s %s: %v", kind, id, err)
			}
			size := len(b) + len(id) + 8 // "id":{…},
			if n > 0 && (n >= limit || used+size > budget) {
				page.Next = last
				return page, nil
			}
			addToPart(&page.RegistryPart, kind, id, val)
			used, n, last = used+size, n+1, kind+"."+id
		}
	}
	return page, nil
}

// idsLocked lists the ids of kind's entries.
func (r *Registry) idsLocked(kind string) []string {
	var ids []string
	switch kind {
	case kindMachine:
		for id := range r.data.Machines {
			ids = append(ids, id)
		}
	case kindPending:
		for id := range r.data.Pending {
			ids = append(ids, id)
		}
	case kindOperator:
		for id := range r.data.Operators {
			ids = append(ids, id)
		}
	case kindApp:
		for id := range r.data.Apps {
			ids = append(ids, id)
		}
	case kindDeny:
		for id := range r.data.Denied {
			ids = append(ids, id)
		}
	}
	return ids
}

// addToPart adds a copy of entry kind/id to p.
func addToPart(p *fleet.RegistryPart, kind, id string, val any) {
	switch v := val.(type) {
	case *fleet.Machine:
		c := copyMachine(v)
		p.Machines = putEntry(p.Machines, id, &c)
	case *fleet.Pending:
		c := copyPending(v)
		p.Pending = putEntry(p.Pending, id, &c)
	case *fleet.Operator:
		c := *v
		p.Operators = putEntry(p.Operators, id, &c)
	case *fleet.App:
		c := copyApp(v)
		p.Apps = putEntry(p.Apps, id, &c)
	case *fleet.Denied:
		c := *v
		p.Denied = putEntry(p.Denied, id, &c)
	}
}

func putEntry[V any](m map[string]*V, k string, v *V) map[string]*V {
	if m == nil {
		m = map[string]*V{}
	}
	m[k] = v
	return m
}

// apiRegistryImport answers OpRegistryImport: it writes a part of a
// registry file (entries checked as a registry file's are) and closes the
// live connections whose key, role or app it replaced.
func (s *Service) apiRegistryImport(ctx context.Context, _ operatorIdentity, body []byte) (any, error) {
	var part fleet.RegistryPart
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&part); err != nil {
		return nil, fleet.Errorf(fleet.CodeBadRequest, "the import is not part of a registry file (machines, pending, operators, apps, denied): %v", err)
	}
	d := registryData{Version: 1, Machines: part.Machines, Pending: part.Pending, Operators: part.Operators, Apps: part.Apps, Denied: part.Denied}
	d.fill()
	if err := d.validate(); err != nil {
		return nil, fleet.Errorf(fleet.CodeBadRequest, "the import is refused, nothing was written: %v", err)
	}
	for id, m := range d.Machines {
		if err := validateLabels(m.Labels); err != nil {
			return nil, fleet.Errorf(fleet.CodeBadRequest, "the import is refused, nothing was written: machine %s: %v", id, err)
		}
	}
	if err := s.reg.checkImportKeys(&d); err != nil {
		return nil, fleet.Errorf(fleet.CodeConflict, "the import is refused, nothing was written: %v", err)
	}
	var (
		res restoreResult
		err error
	)
	// Written outside presence's admission lock, taken only to list the
	// connections to close (see importMachines).
	res, err = s.reg.restore(&d, restoreReplace)
	var users []string
	for _, id := range res.Rekeyed {
		users = append(users, agentUserPrefix+id)
	}
	for _, name := range res.Operators {
		users = append(users, operatorUserPrefix+name)
	}
	conns := s.presence.admitted(func() []string { return users })
	out := fleet.RegistryImportResult{Added: map[string]int{}, Changed: map[string]int{}, Skipped: map[string]int{}}
	for kind, n := range res.Added {
		out.Added[fieldOf(kind)] = n
	}
	for kind, n := range res.Changed {
		out.Changed[fieldOf(kind)] = n
	}
	for kind, n := range res.Skipped {
		out.Skipped[fieldOf(kind)] = n
	}
	out.Closed = s.presence.kick(ctx, conns)
	for _, app := range res.Apps {
		out.Closed += s.sessionGate().closeApp(ctx, app)
	}
	done := registryImportDone{RegistryImportResult: out, note: importNote(res)}
	if err != nil {
		// The reply is the error; the audit's note still names what
		// was written before it.
		return done, fmt.Errorf("registry import stopped part-way (%v added, %v changed so far): %w", out.Added, out.Changed, err)
	}
	return done, nil
}

// registryImportDone is OpRegistryImport's reply, with the audit's note
// (changeNote) on the side.
type registryImportDone struct {
	fleet.RegistryImportResult
	note string
}

// importNoteNames bounds the names of each kind an import's note lists
// (operators: importNoteOperators); past them it counts the rest.
const (
	importNoteOperators = 100
	importNoteNames     = 20
)

// importNote says, for the audit, what an import changed beyond counts:
// each operator added or changed with its role, the apps replaced and
// the machines whose key it replaced.
func importNote(res restoreResult) string {
	var parts []string
	list := func(what string, names []string, limit int) {
		if len(names) == 0 {
			return
		}
		shown := names[:min(len(names), limit)]
		p := what + strings.Join(shown, ", ")
		if n := len(names) - len(shown); n > 0 {
			p += fmt.Sprintf(" and %d more", n)
		}
		parts = append(parts, p)
	}
	// Admins first: those matter most when the list is cut.
	ops := slices.Clone(res.OperatorNotes)
	sort.SliceStable(ops, func(i, j int) bool {
		return strings.Contains(ops[i], "("+fleet.RoleAdmin) && !strings.Contains(ops[j], "("+fleet.RoleAdmin)
	})
	list("", ops, importNoteOperators)
	list("replaced apps ", res.Apps, importNoteNames)
	list("replaced the key of machines ", res.Rekeyed, importNoteNames)
	return strings.Join(parts, "; ")
}
