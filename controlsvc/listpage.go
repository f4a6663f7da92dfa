package controlsvc

import (
	"context"
	"encoding/json"
	"sort"
	"strconv"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// A list reply (machines, pending machines, operators) is one page: the
// entries sorted after the request's After, as many as fit in half the
// broker's payload limit and at most the request's Limit. Without pages
// a registry of a few thousand machines made a reply larger than the
// broker carries, and the list failed for everyone with a timeout.

// defaultListLimit is a page's size when the request names none; the
// byte budget usually ends a page first.
const defaultListLimit = 5000

// listLimit checks a request's limit and applies the default.
func listLimit(req fleet.ListRequest) (int, error) {
	switch {
	case req.Limit < 0 || req.Limit > fleet.MaxListLimit:
		return 0, fleet.Errorf(fleet.CodeBadRequest, "limit %d is out of range; ask for 1 to %d entries (0 for the default)", req.Limit, fleet.MaxListLimit)
	case req.Limit == 0:
		return defaultListLimit, nil
	}
	return req.Limit, nil
}

// decodeList decodes a list request; an empty body asks for the first page.
func decodeList(body []byte) (fleet.ListRequest, int, error) {
	var req fleet.ListRequest
	if len(body) > 0 {
		if err := decode(body, &req); err != nil {
			return req, 0, err
		}
	}
	limit, err := listLimit(req)
	return req, limit, err
}

// replyBudget is how many bytes of entries one list reply may carry.
func (s *Service) replyBudget() int {
	limit := 1 << 20
	if s.fl != nil {
		if mp := int(s.fl.MaxPayload()); mp > 0 {
			limit = mp
		}
	}
	return limit / 2
}

// keysAfter returns the keys of m that sort after after, sorted, at most
// limit of them, and whether more follow: the page of a map-held list
// (pending machines, the deny list) without copying or sorting the rest.
func keysAfter[V any](m map[string]V, after string, limit int) ([]string, bool) {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k > after {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if len(keys) > limit {
		return keys[:limit], true
	}
	return keys, false
}

// pageAfter returns the entries of sorted (ordered by key) that come after
// after, at most limit of them, and whether more follow.
func pageAfter[T any](sorted []T, key func(T) string, after string, limit int) ([]T, bool) {
	i := 0
	if after != "" {
		i = sort.Search(len(sorted), func(i int) bool { return key(sorted[i]) > after })
	}
	rest := sorted[i:]
	if len(rest) > limit {
		return rest[:limit], true
	}
	return rest, false
}

// encodePage encodes a list reply, {"<field>":[…],"total":…,"next":…},
// from the longest prefix of page whose entries fit in budget bytes (at
// least one: a page that could hold none would stall the reader). Each
// entry is encoded once: measuring a page and then encoding it again
// doubled the work of listing a large fleet.
func encodePage[T any](field string, page []T, more bool, total, budget int, key func(T) string) (json.RawMessage, error) {
	out := make([]byte, 0, 1024)
	out = append(out, '{')
	out = strconv.AppendQuote(out, field)
	out = append(out, ':', '[')
	used, n := 0, 0
	for _, it := range page {
		b, err := json.Marshal(it)
		if err != nil {
			return nil, fleet.Errorf(fleet.CodeInternal, "encode %s: %v", field, err)
		}
		if used+len(b)+1 > budget && n > 0 {
			break
		}
		if n > 0 {
			out = append(out, ',')
		}
		out = append(out, b...)
		used += len(b) + 1
		n++
	}
	out = append(out, `],"total":`...)
	out = strconv.AppendInt(out, int64(total), 10)
	if (more || n < len(page)) && n > 0 {
		next, _ := json.Marshal(key(page[n-1]))
		out = append(out, `,"next":`...)
		out = append(out, next...)
	}
	return append(out, '}'), nil
}

func machineID(m fleet.Machine) string     { return m.ID }
func pendingID(p fleet.Pending) string     { return p.ID }
func operatorName(o fleet.Operator) string { return o.Name }

func (s *Service) apiMachinesList(_ context.Context, _ operatorIdentity, body []byte) (any, error) {
	req, limit, err := decodeList(body)
	if err != nil {
		return nil, err
	}
	page, more, total := s.reg.MachinesAfter(req.After, limit)
	for i := range page {
		page[i].Online = s.presence.online(page[i].ID)
		page[i].Seen = s.seenOf(page[i].ID, page[i].AddedAt)
	}
	return encodePage("machines", page, more, total, s.replyBudget(), machineID)
}

func (s *Service) apiMachinesPending(_ context.Context, _ operatorIdentity, body []byte) (any, error) {
	req, limit, err := decodeList(body)
	if err != nil {
		return nil, err
	}
	page, more, total := s.reg.PendingAfter(req.After, limit)
	return encodePage("pending", page, more, total, s.replyBudget(), pendingID)
}

func (s *Service) apiOperatorsList(_ context.Context, _ operatorIdentity, body []byte) (any, error) {
	req, limit, err := decodeList(body)
	if err != nil {
		return nil, err
	}
	all := s.reg.Operators()
	page, more := pageAfter(all, operatorName, req.After, limit)
	return encodePage("operators", page, more, len(all), s.replyBudget(), operatorName)
}

// MachinesAfter returns at most limit registered machines with ids after
// after, in id order, whether more follow, and how many there are in all.
// The sorted ids are kept until the registry changes, so paging through a
// large fleet does not sort it once per page.
func (r *Registry) MachinesAfter(after string, limit int) ([]fleet.Machine, bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v := r.changes.Load(); r.sortedIDs == nil || r.sortedAt != v || len(r.sortedIDs) != len(r.data.Machines) {
		ids := make([]string, 0, len(r.data.Machines))
		for id := range r.data.Machines {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		r.sortedIDs, r.sortedAt = ids, v
	}
	ids, more := pageAfter(r.sortedIDs, func(id string) string { return id }, after, limit)
	out := make([]fleet.Machine, 0, len(ids))
	for _, id := range ids {
		out = append(out, copyMachine(r.data.Machines[id]))
	}
	return out, more, len(r.data.Machines)
}
