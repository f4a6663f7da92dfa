package functions

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/internal/filestamp"
)

// DefaultReloadInterval is how often [Set.WatchDir] looks for changed
// definition files.
const DefaultReloadInterval = 5 * time.Second

// SetCustom serves defs as the operators' own functions, replacing those of
// the previous call: a definition that is gone stops being served, a
// changed one is served anew (calls already running finish on the old
// one). A name taken by a built-in or by a function added with [Set.Add] is
// refused. It reports whether anything changed, and the refusals.
func (s *Set) SetCustom(defs []Definition) (changed bool, errs []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.custom == nil {
		s.custom = map[string]Definition{}
	}
	keep := map[string]bool{}
	for _, d := range defs {
		old, isCustom := s.custom[d.Name]
		if _, taken := s.fns[d.Name]; taken && !isCustom {
			errs = append(errs, &DefinitionError{File: d.File, Field: "name", Err: errors.New("a function of that name is already served")})
			continue
		}
		keep[d.Name] = true
		if isCustom && reflect.DeepEqual(old, d) {
			continue
		}
		s.custom[d.Name] = d
		s.fns[d.Name] = NewCustomFunction(d, s.env)
		changed = true
	}
	for name := range s.custom {
		if !keep[name] {
			delete(s.custom, name)
			delete(s.fns, name)
			changed = true
		}
	}
	return changed, errs
}

// Custom lists the definitions being served, by name.
func (s *Set) Custom() map[string]Definition {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]Definition, len(s.custom))
	for k, v := range s.custom {
		out[k] = v
	}
	return out
}

// LoadDir (re)loads the definitions of dir and serves them ([SetCustom]).
// Each bad file is logged with its file and field and left out; the others
// are served. When dir itself cannot be read (other than not existing) the
// functions served so far are kept.
func (s *Set) LoadDir(dir string) (changed bool, errs []error) {
	defs, errs := LoadDefinitions(dir)
	for _, err := range errs {
		var de *DefinitionError
		if errors.As(err, &de) && de.File == dir {
			s.env.Logger.Error("cannot read the functions directory; keeping the functions loaded before", "dir", dir, "error", err)
			return false, errs
		}
	}
	changed, more := s.SetCustom(defs)
	errs = append(errs, more...)
	// Each bad file is logged when it turns bad, not again on every reload.
	var msgs []string
	for _, err := range errs {
		msgs = append(msgs, err.Error())
	}
	s.mu.Lock()
	fresh := strings.Join(msgs, "\n") != s.lastErrs
	s.lastErrs = strings.Join(msgs, "\n")
	s.mu.Unlock()
	if fresh {
		for _, err := range errs {
			s.env.Logger.Error("function definition not loaded", "error", err)
		}
	}
	if changed {
		names := []string{}
		for _, d := range defs {
			names = append(names, d.Name)
		}
		s.env.Logger.Info("operator functions loaded", "dir", dir, "functions", names, "errors", len(errs))
	}
	return changed, errs
}

// WatchDir loads dir's definitions, then reloads them whenever a file in it is added,
// removed or changed (checked every interval; 0 means
// [DefaultReloadInterval]) and whenever reload receives, until ctx ends.
// onChange, if not nil, runs after a reload that changed the served set.
func (s *Set) WatchDir(ctx context.Context, dir string, interval time.Duration, reload <-chan struct{}, onChange func()) {
	if interval <= 0 {
		interval = DefaultReloadInterval
	}
	sig := filestamp.Dir(dir)
	if changed, _ := s.LoadDir(dir); changed && onChange != nil {
		onChange()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
			s.env.Logger.Info("reloading operator functions", "dir", dir)
		case <-t.C:
			now := filestamp.Dir(dir)
			if now == sig {
				continue
			}
		}
		sig = filestamp.Dir(dir)
		if changed, _ := s.LoadDir(dir); changed && onChange != nil {
			onChange()
		}
	}
}
