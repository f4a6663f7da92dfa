package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// RegistryExport reads the whole registry (admin) page by page, in
// registry.json's shape: what `cc-bench registry export` writes. progress,
// when set, is told after each page how many entries have come of how
// many.
func (c *Client) RegistryExport(ctx context.Context, progress func(done, total int)) (fleet.RegistryPart, error) {
	var out fleet.RegistryPart
	after, done := "", 0
	for {
		var page fleet.RegistryExportPage
		if err := c.Control(ctx, fleet.OpRegistryExport, fleet.RegistryExportRequest{After: after}, &page); err != nil {
			return out, err
		}
		out.Machines = merge(out.Machines, page.Machines)
		out.Pending = merge(out.Pending, page.Pending)
		out.Operators = merge(out.Operators, page.Operators)
		out.Apps = merge(out.Apps, page.Apps)
		out.Denied = merge(out.Denied, page.Denied)
		done += len(page.Machines) + len(page.Pending) + len(page.Operators) + len(page.Apps) + len(page.Denied)
		if progress != nil {
			progress(done, page.Total)
		}
		if page.Next == "" {
			return out, nil
		}
		if page.Next <= after {
			return out, fmt.Errorf("%s: the service sent the page cursor %q after %q; it must advance (is cc-control up to date?)", fleet.OpRegistryExport, page.Next, after)
		}
		after = page.Next
	}
}

func merge[V any](dst, src map[string]*V) map[string]*V {
	if len(src) == 0 {
		return dst
	}
	if dst == nil {
		dst = map[string]*V{}
	}
	maps.Copy(dst, src)
	return dst
}

// RegistryImport writes the entries of part into the registry (admin):
// those missing are added, those that differ are changed to part's, and
// identical ones skipped (see [fleet.RegistryImportResult]). It is sent in
// pieces that each fit in one message, operators and apps first;
// progress, when set, is told after each piece how many entries are done
// of how many.
func (c *Client) RegistryImport(ctx context.Context, part fleet.RegistryPart, progress func(done, total int)) (fleet.RegistryImportResult, error) {
	sum := fleet.RegistryImportResult{Added: map[string]int{}, Changed: map[string]int{}, Skipped: map[string]int{}}
	budget := int(c.nc.MaxPayload()) / 2
	if budget <= 0 {
		budget = 512 << 10
	}
	total := len(part.Machines) + len(part.Pending) + len(part.Operators) + len(part.Apps) + len(part.Denied)
	var piece fleet.RegistryPart
	size, n, done := 0, 0, 0
	send := func() error {
		if n == 0 {
			return nil
		}
		var r fleet.RegistryImportResult
		if err := c.Control(ctx, fleet.OpRegistryImport, piece, &r); err != nil {
			return fmt.Errorf("after %d of %d entries: %w", done, total, err)
		}
		for k, v := range r.Added {
			sum.Added[k] += v
		}
		for k, v := range r.Changed {
			sum.Changed[k] += v
		}
		for k, v := range r.Skipped {
			sum.Skipped[k] += v
		}
		sum.Closed += r.Closed
		done += n
		if progress != nil {
			progress(done, total)
		}
		piece, size, n = fleet.RegistryPart{}, 0, 0
		return nil
	}
	add := func(id string, v any, put func()) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if n > 0 && size+len(b)+len(id)+8 > budget {
			if err := send(); err != nil {
				return err
			}
		}
		put()
		size, n = size+len(b)+len(id)+8, n+1
		return nil
	}
	for _, id := range slices.Sorted(maps.Keys(part.Operators)) {
		if err := add(id, part.Operators[id], func() { piece.Operators = merge(piece.Operators, map[string]*fleet.Operator{id: part.Operators[id]}) }); err != nil {
			return sum, err
		}
	}
	for _, id := range slices.Sorted(maps.Keys(part.Apps)) {
		if err := add(id, part.Apps[id], func() { piece.Apps = merge(piece.Apps, map[string]*fleet.App{id: part.Apps[id]}) }); err != nil {
			return sum, err
		}
	}
	for _, id := range slices.Sorted(maps.Keys(part.Machines)) {
		if err := add(id, part.Machines[id], func() { piece.Machines = merge(piece.Machines, map[string]*fleet.Machine{id: part.Machines[id]}) }); err != nil {
			return sum, err
		}
	}
	for _, id := range slices.Sorted(maps.Keys(part.Denied)) {
		if err := add(id, part.Denied[id], func() { piece.Denied = merge(piece.Denied, map[string]*fleet.Denied{id: part.Denied[id]}) }); err != nil {
			return sum, err
		}
	}
	for _, id := range slices.Sorted(maps.Keys(part.Pending)) {
		if err := add(id, part.Pending[id], func() { piece.Pending = merge(piece.Pending, map[string]*fleet.Pending{id: part.Pending[id]}) }); err != nil {
			return sum, err
		}
	}
	return sum, send()
}
