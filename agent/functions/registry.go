// Package functions holds the agent's client functions, one file each, in
// the manner of node_exporter's collectors: each file registers its function
// from init() with [Register]; [New] builds the set an agent serves.
//
// Reading is split from parsing: the package databases are parsed by
// agent/pkgdb (as procfs does for node_exporter), so a function here turns
// parsed data into its reply, and every filesystem path is taken relative
// to [Env.Root] so tests point at fixture trees. Operators' own functions
// (JSON definitions) are served by agent/custom, which imports this
// package. A failing or panicking function answers an error; it never
// takes the agent down.
package functions

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/pkgdb"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// MaxRequestSize bounds a call's request body.
const MaxRequestSize = 64 * 1024

// Arg types.
const (
	TypeString = "string"
	TypeInt    = "int"
	TypeFloat  = "float"
	TypeBool   = "bool"
)

// Arg describes one typed argument of a function.
type Arg struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Help     string `json:"help,omitempty"`
	Required bool   `json:"required,omitempty"`
}

// Spec describes a function: its name, help, whether it only reads, and its
// arguments.
type Spec struct {
	Name     string `json:"name"`
	Help     string `json:"help"`
	ReadOnly bool   `json:"read_only"`
	Args     []Arg  `json:"args,omitempty"`
	// Instant marks a function that answers from memory or one small
	// read of /proc, in microseconds, and never blocks: the agent runs it
	// where the call arrives instead of on a goroutine of its own with a
	// timeout. Never set it for anything that runs a program or reads a
	// package database.
	Instant bool `json:"instant,omitempty"`
}

// Args are a call's arguments after validation: each value has the Go type
// of its declared [Arg.Type] (string, int64, float64, bool).
type Args map[string]any

// String returns the string argument name, or "" when absent.
func (a Args) String(name string) string { s, _ := a[name].(string); return s }

// Int returns the int argument name, or def when absent.
func (a Args) Int(name string, def int64) int64 {
	if v, ok := a[name].(int64); ok {
		return v
	}
	return def
}

// Bool returns the bool argument name, or false when absent.
func (a Args) Bool(name string) bool { b, _ := a[name].(bool); return b }

// Function is one client function.
type Function interface {
	Spec() Spec
	// Call runs the function. A returned *fleet.Error reaches the caller with
	// its code; any other error is sent as fleet.CodeInternal.
	Call(ctx context.Context, args Args) (any, error)
}

// Encoded is a result that holds its own JSON, encoded once by
// encoding/json (valid and compact): the agent sends those bytes as the
// answer instead of encoding the result again for every call (a
// json.Marshal of a json.Marshaler validates and compacts its output
// each time). EncodedJSON returns nil when the result has none.
type Encoded interface {
	EncodedJSON() []byte
}

// FuncOf adapts a plain func to [Function].
func FuncOf(spec Spec, call func(ctx context.Context, args Args) (any, error)) Function {
	return funcAdapter{spec, call}
}

type funcAdapter struct {
	spec Spec
	call func(ctx context.Context, args Args) (any, error)
}

func (f funcAdapter) Spec() Spec                                       { return f.spec }
func (f funcAdapter) Call(ctx context.Context, args Args) (any, error) { return f.call(ctx, args) }

// Env is what functions may depend on.
type Env struct {
	// Root is the filesystem root paths are read under ("/" in production,
	// a fixture tree in tests).
	Root string
	// MachineID is the agent's machine id.
	MachineID string
	// Version is the agent's version.
	Version string
	// Logger is never nil after [New].
	Logger *slog.Logger
	// Now is the clock every time-based decision of the functions reads
	// (an index's Valid-Until, cache ages, uptime); nil means time.Now.
	// Tests set a fixed time so no result depends on the day they run.
	Now func() time.Time

	dbOnce sync.Once
	db     *pkgdb.DB
}

// clock returns [Env.Now], or time.Now when it is nil.
func (e *Env) clock() func() time.Time {
	if e.Now != nil {
		return e.Now
	}
	return time.Now
}

// packageDB is the installed-package database every function of this Env
// shares, so sw-list and installed-sec-patches parse and cache it once.
func (e *Env) packageDB() *pkgdb.DB {
	e.dbOnce.Do(func() { e.db = pkgdb.NewDB(e.Root) })
	return e.db
}

// Factory creates a function for env.
type Factory func(env *Env) (Function, error)

var (
	factoriesMu sync.Mutex
	factories   = map[string]Factory{}
)

// Register makes a built-in function available to [New]. It is called from
// init() of the function's file and panics on a duplicate name.
func Register(name string, f Factory) {
	factoriesMu.Lock()
	defer factoriesMu.Unlock()
	if _, dup := factories[name]; dup {
		panic("functions: duplicate registration of " + name)
	}
	factories[name] = f
}

// IsBuiltin reports whether name is registered by a built-in's init().
func IsBuiltin(name string) bool {
	factoriesMu.Lock()
	defer factoriesMu.Unlock()
	_, ok := factories[name]
	return ok
}

// Set is the functions one agent serves.
type Set struct {
	env *Env
	mu  sync.RWMutex
	fns map[string]Function
}

// New instantiates every registered built-in function for env. A factory that
// fails is logged and left out; the others are served.
func New(env *Env) *Set {
	if env.Root == "" {
		env.Root = "/"
	}
	if env.Logger == nil {
		env.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Set{env: env, fns: map[string]Function{}}
	factoriesMu.Lock()
	defer factoriesMu.Unlock()
	for name, f := range factories {
		fn, err := build(name, f, env)
		if err != nil {
			env.Logger.Warn("function disabled", "function", name, "error", err)
			continue
		}
		s.fns[name] = fn
	}
	return s
}

// build runs one factory, turning a panic or a nil function into an error so
// one broken built-in cannot stop the agent from starting.
func build(name string, f Factory, env *Env) (fn Function, err error) {
	defer func() {
		if r := recover(); r != nil {
			fn, err = nil, fmt.Errorf("factory panicked: %v", r)
		}
	}()
	fn, err = f(env)
	if err == nil && fn == nil {
		err = fmt.Errorf("factory for %s returned no function", name)
	}
	return fn, err
}

// Env is the environment the set's functions were built for.
func (s *Set) Env() *Env { return s.env }

// Add serves fn alongside the built-ins: the Go API for operators' own
// functions, registered the same way the built-ins are. It replaces a
// function of the same name (a definition loaded from the functions
// directory by package custom included: the Go function wins until the
// next reload refuses the definition).
func (s *Set) Add(fn Function) error {
	if fn == nil {
		return fmt.Errorf("cannot add a nil function")
	}
	spec := fn.Spec()
	if err := fleet.ValidateName("function name", spec.Name); err != nil {
		return err
	}
	s.mu.Lock()
	s.fns[spec.Name] = fn
	s.mu.Unlock()
	return nil
}

// Remove stops serving the function name.
func (s *Set) Remove(name string) {
	s.mu.Lock()
	delete(s.fns, name)
	s.mu.Unlock()
}

// Update runs update on the served functions, by name, under the set's
// lock, and serves what it leaves: the way package custom adds, replaces
// and removes the operators' functions in one step, beside the built-ins.
// update must not call the set's methods.
func (s *Set) Update(update func(fns map[string]Function)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	update(s.fns)
}

// Specs lists every served function, sorted by name.
func (s *Set) Specs() []Spec {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Spec, 0, len(s.fns))
	for _, fn := range s.fns {
		out = append(out, fn.Spec())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Lookup returns the function name.
func (s *Set) Lookup(name string) (Function, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	fn, ok := s.fns[name]
	return fn, ok
}

// Call decodes and validates the request body, runs function name and
// recovers a panic. Errors are *fleet.Error with a code: 404 for an unknown
// function, 400 for a bad request, 413 for an oversized one, 500 for a
// failure or panic.
func (s *Set) Call(ctx context.Context, name string, body []byte) (result any, err error) {
	fn, ok := s.Lookup(name)
	if !ok {
		return nil, fleet.Errorf(fleet.CodeNotFound, "function %q not found on %s", name, s.env.MachineID)
	}
	if len(body) > MaxRequestSize {
		return nil, fleet.Errorf(fleet.CodeTooLarge, "request is %d bytes; at most %d are allowed", len(body), MaxRequestSize)
	}
	// Recover from here on: an operator's Spec method can panic as well as
	// its Call.
	defer func() {
		if r := recover(); r != nil {
			s.env.Logger.Error("function panicked", "function", name, "panic", r, "stack", string(debug.Stack()))
			result, err = nil, fleet.Errorf(fleet.CodeInternal, "function %s failed: panic: %v", name, r)
		}
	}()
	args, err := ParseArgs(fn.Spec(), body)
	if err != nil {
		return nil, err
	}
	return fn.Call(ctx, args)
}

// Runner is implemented by functions that keep a background sampler (rates
// need two readings apart in time); [Set.Start] runs them.
type Runner interface {
	Run(ctx context.Context)
}

// Start runs every function's background sampler until ctx ends.
func (s *Set) Start(ctx context.Context) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, fn := range s.fns {
		if r, ok := fn.(Runner); ok {
			go r.Run(ctx)
		}
	}
}
