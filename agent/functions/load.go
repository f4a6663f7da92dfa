package functions

import "context"

func init() { Register("current-load", newLoad) }

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
}

type currentLoad struct{ root string }

func newLoad(env *Env) (Function, error) { return &currentLoad{root: env.Root}, nil }

func (f *currentLoad) Spec() Spec {
	return Spec{
		Name:     "current-load",
		Help:     "load averages, running and blocked processes, CPU count and pressure stall information",
		ReadOnly: true,
	}
}

func (f *currentLoad) Call(ctx context.Context, _ Args) (any, error) {
	return readLoad(ctx, f.root)
}
