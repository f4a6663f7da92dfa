package custom

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/agent/internal/filestamp"
)

// DefaultReloadInterval is how often [Loader.WatchDir] looks for changed
// definition files.
const DefaultReloadInterval = 5 * time.Second

// Loader serves operators' definitions on a [functions.Set], beside the
// built-ins and the functions added with [functions.Set.Add].
type Loader struct {
	set *functions.Set
	env *functions.Env

	mu       sync.Mutex
	served   map[string]served // the definitions being served, by name
	lastErrs string            // the last LoadDir's errors, so each is logged once
}

// served is a definition and the function serving it.
type served struct {
	def Definition
	fn  functions.Function
}

// NewLoader returns a loader of definitions for set.
func NewLoader(set *functions.Set) *Loader {
	return &Loader{set: set, env: set.Env(), served: map[string]served{}}
}

// Set serves defs as the operators' own functions, replacing those of the
// previous call: a definition that is gone stops being served, a changed
// one is served anew (calls already running finish on the old one). A name
// taken by a built-in or by a function added with [functions.Set.Add] is
// refused. It reports whether anything changed, and the refusals.
func (l *Loader) Set(defs []Definition) (changed bool, errs []error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.set.Update(func(fns map[string]functions.Function) {
		// A function added or removed in the set since is no longer ours.
		for name, sv := range l.served {
			if fns[name] != sv.fn {
				delete(l.served, name)
			}
		}
		keep := map[string]bool{}
		for _, d := range defs {
			old, isCustom := l.served[d.Name]
			if _, taken := fns[d.Name]; taken && !isCustom {
				errs = append(errs, &DefinitionError{File: d.File, Field: "name", Err: errors.New("a function of that name is already served")})
				continue
			}
			keep[d.Name] = true
			if isCustom && reflect.DeepEqual(old.def, d) {
				continue
			}
			fn := NewFunction(d, l.env)
			l.served[d.Name] = served{def: d, fn: fn}
			fns[d.Name] = fn
			changed = true
		}
		for name := range l.served {
			if !keep[name] {
				delete(l.served, name)
				delete(fns, name)
				changed = true
			}
		}
	})
	return changed, errs
}

// LoadDir (re)loads the definitions of dir and serves them ([Loader.Set]).
// Each bad file is logged with its file and field and left out; the others
// are served. When dir itself cannot be read (other than not existing) the
// functions served so far are kept.
func (l *Loader) LoadDir(dir string) (changed bool, errs []error) {
	defs, errs := LoadDefinitions(dir)
	for _, err := range errs {
		var de *DefinitionError
		if errors.As(err, &de) && de.File == dir {
			l.env.Logger.Error("cannot read the functions directory; keeping the functions loaded before", "dir", dir, "error", err)
			return false, errs
		}
	}
	changed, more := l.Set(defs)
	errs = append(errs, more...)
	// Each bad file is logged when it turns bad, not again on every reload.
	var msgs []string
	for _, err := range errs {
		msgs = append(msgs, err.Error())
	}
	l.mu.Lock()
	fresh := strings.Join(msgs, "\n") != l.lastErrs
	l.lastErrs = strings.Join(msgs, "\n")
	l.mu.Unlock()
	if fresh {
		for _, err := range errs {
			l.env.Logger.Error("function definition not loaded", "error", err)
		}
	}
	if changed {
		names := []string{}
		for _, d := range defs {
			names = append(names, d.Name)
		}
		l.env.Logger.Info("operator functions loaded", "dir", dir, "functions", names, "errors", len(errs))
	}
	return changed, errs
}

// WatchDir loads dir's definitions, then reloads them whenever a file in it is added,
// removed or changed (checked every interval; 0 means
// [DefaultReloadInterval]) and whenever reload receives, until ctx ends.
// onChange, if not nil, runs after a reload that changed the served set.
func (l *Loader) WatchDir(ctx context.Context, dir string, interval time.Duration, reload <-chan struct{}, onChange func()) {
	if interval <= 0 {
		interval = DefaultReloadInterval
	}
	sig := filestamp.Dir(dir)
	if changed, _ := l.LoadDir(dir); changed && onChange != nil {
		onChange()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
			l.env.Logger.Info("reloading operator functions", "dir", dir)
		case <-t.C:
			now := filestamp.Dir(dir)
			if now == sig {
				continue
			}
		}
		sig = filestamp.Dir(dir)
		if changed, _ := l.LoadDir(dir); changed && onChange != nil {
			onChange()
		}
	}
}
