package functions

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

func init() { Register(fleet.FnCurrentLoad, newLoad) }

// LoadReply answers current-load. Load averages are top-level numbers so a
// workbench can filter on `load1 > 10`.
type LoadReply struct {
	Load1        float64 `json:"load1"`
	Load5        float64 `json:"load5"`
	Load15       float64 `json:"load15"`
	ProcsRunning int     `json:"procs_running"`
	ProcsBlocked int     `json:"procs_blocked"`
	CPUs         int     `json:"cpus"`
	// Pressure holds Linux PSI (/proc/pressure/cpu, memory, io) when the
	// kernel provides it: "cpu" → {"some_avg10": 0.6, …, "full_total": 0}.
	Pressure map[string]map[string]float64 `json:"pressure,omitempty"`
	// Emulated is true on Windows, which has no load average: gopsutil
	// estimates one from the processor queue length, sampled in the
	// background from the first call on (so the first values are 0).
	Emulated bool `json:"emulated,omitempty"`

	// enc is the reply's JSON, encoded once per reading: a fleet-wide
	// call makes every agent answer at once, and encoding the pressure
	// maps afresh for each call of a cached reading is wasted work.
	enc []byte
}

// MarshalJSON returns the reading's JSON, encoded once.
func (r *LoadReply) MarshalJSON() ([]byte, error) {
	if r.enc != nil {
		return r.enc, nil
	}
	type plain LoadReply
	return json.Marshal((*plain)(r))
}

// EncodedJSON returns the reading's JSON when it was encoded once (see
// [Encoded]), else nil.
func (r *LoadReply) EncodedJSON() []byte {
	if r == nil {
		return nil
	}
	return r.enc
}

// loadCacheFor is how long a current-load reading is reused. The kernel
// recomputes load averages every 5 s and PSI averages every 2 s, so a
// reading a second old says the same; a burst of calls costs one read.
const loadCacheFor = time.Second

type currentLoad struct {
	root string
	now  func() time.Time // Env.Now: the cached reading's age
	mu   sync.Mutex
	last *LoadReply
	at   time.Time
}

func newLoad(env *Env) (Function, error) { return &currentLoad{root: env.Root, now: env.clock()}, nil }

func (f *currentLoad) Spec() Spec {
	return Spec{
		Name:     fleet.FnCurrentLoad,
		Help:     "load averages, running and blocked processes, CPU count and pressure stall information",
		ReadOnly: fleet.ReadOnlyBuiltin(fleet.FnCurrentLoad),
		Instant:  true, // one read of /proc/loadavg and /proc/pressure a second, cached
	}
}

func (f *currentLoad) Call(ctx context.Context, _ Args) (any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last != nil && f.now().Sub(f.at) < loadCacheFor {
		return f.last, nil
	}
	r, err := readLoad(ctx, f.root)
	if err != nil {
		return nil, err
	}
	if r.enc, err = r.MarshalJSON(); err != nil {
		return nil, err
	}
	f.last, f.at = r, f.now()
	return r, nil
}
