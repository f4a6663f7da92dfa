package agent

import "sync"

// recentCallIDs is how many call ids an agent remembers. A caller re-sends
// a call within its timeout (seconds), so a repeat is caught unless this
// agent was sent more than this many other calls meanwhile.
const recentCallIDs = 8192

// recentCalls remembers the last call ids an agent ran, so a re-sent copy
// of a call runs at most once. A fixed ring: memory is bounded whatever
// callers send.
type recentCalls struct {
	mu   sync.Mutex
	seen map[string]struct{}
	ring []string
	next int
}

func newRecentCalls(n int) *recentCalls {
	return &recentCalls{seen: make(map[string]struct{}, n), ring: make([]string, n)}
}

// first records id and reports whether it is the first time it was seen.
func (r *recentCalls) first(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.seen[id]; dup {
		return false
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.seen, old)
	}
	r.ring[r.next] = id
	r.next = (r.next + 1) % len(r.ring)
	r.seen[id] = struct{}{}
	return true
}

// has reports whether id was seen, without recording it: a call refused
// before it got a slot is not recorded, so its re-sent copy may run.
func (r *recentCalls) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.seen[id]
	return ok
}
