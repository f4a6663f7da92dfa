package controlsvc

import (
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nkeys"
)

// Apps are the operator-registered applications whose sessions may join
// (see fleet.App). They live in the registry next to the machines and
// operators, stored before a change is acknowledged.

// Bounds of an app.
const (
	// MaxAppFunctions bounds the functions an app's sessions expose (one
	// subscribe permission each in every session's credentials).
	MaxAppFunctions = 64
	// MaxAppOrigins bounds the web origins of an app.
	MaxAppOrigins = 32
	// maxOriginLen bounds one origin.
	maxOriginLen = 256
)

// validateAppRequest checks what apps.add is asked to register.
func validateAppRequest(q fleet.AppRequest) error {
	if err := fleet.ValidateName("app name", q.Name); err != nil {
		return invalid(err)
	}
	if len(q.Functions) == 0 {
		return invalidf("app %s has no functions; name at least one its sessions expose (cc-bench apps add %s --fn latencyCheck)", q.Name, q.Name)
	}
	if len(q.Functions) > MaxAppFunctions {
		return invalidf("app %s has %d functions; at most %d are allowed", q.Name, len(q.Functions), MaxAppFunctions)
	}
	for i, fn := range q.Functions {
		if err := fleet.ValidateName("function name", fn); err != nil {
			return invalid(err)
		}
		if slices.Contains(q.Functions[:i], fn) {
			return invalidf("app %s: function %s is named twice", q.Name, fn)
		}
	}
	if q.MaxSessions < 0 {
		return invalidf("app %s: max_sessions is %d; use 0 for the service's default or a positive cap", q.Name, q.MaxSessions)
	}
	if len(q.Origins) > MaxAppOrigins {
		return invalidf("app %s has %d origins; at most %d are allowed", q.Name, len(q.Origins), MaxAppOrigins)
	}
	for _, o := range q.Origins {
		if err := validateOrigin(o); err != nil {
			return invalidf("app %s: %v", q.Name, err)
		}
	}
	return nil
}

// validateOrigin checks a web origin: http(s)://host[:port], nothing more.
func validateOrigin(o string) error {
	bad := func(why string) error {
		return fmt.Errorf("origin %q %s; write it as a browser sends it: https://host or https://host:port", boundClientText(o), why)
	}
	if len(o) > maxOriginLen {
		return bad(fmt.Sprintf("is longer than %d bytes", maxOriginLen))
	}
	u, err := url.Parse(o)
	if err != nil {
		return bad("does not parse")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return bad("is not http or https")
	case u.Host == "" || u.Hostname() == "":
		return bad("has no host")
	case u.User != nil:
		return bad("has a user name")
	case u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#"):
		return bad("has a path, query or fragment")
	case o != strings.ToLower(u.Scheme)+"://"+u.Host:
		return bad("is not in its plain form")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return bad("has a bad port")
		}
	}
	return nil
}

// validateApps checks the apps of a registry file.
func validateApps(apps map[string]*fleet.App) error {
	for name, a := range apps {
		if a == nil || a.Name != name {
			return fmt.Errorf("app entry %q is malformed", name)
		}
		if err := validateAppRequest(fleet.AppRequest{Name: a.Name, Functions: a.Functions, MaxSessions: a.MaxSessions, Origins: a.Origins}); err != nil {
			return fmt.Errorf("app entry %q: %v", name, err)
		}
		switch a.Admission {
		case fleet.AdmissionPublic:
			if a.Key != "" {
				return fmt.Errorf("app entry %q is public but has a key", name)
			}
		case fleet.AdmissionSigned:
			if !nkeys.IsValidPublicAccountKey(a.Key) {
				return fmt.Errorf("app entry %q is signed but its key %q is not a public account nkey", name, a.Key)
			}
		default:
			return fmt.Errorf("app entry %q has admission %q; want %s or %s", name, a.Admission, fleet.AdmissionPublic, fleet.AdmissionSigned)
		}
	}
	return nil
}

// AddApp registers the app q describes, added by operator by. A signed
// app (not q.Public) gets a fresh signing key: its seed is returned this
// once and only its public half is kept.
func (r *Registry) AddApp(q fleet.AppRequest, by string) (fleet.AppCreated, error) {
	if err := validateAppRequest(q); err != nil {
		return fleet.AppCreated{}, err
	}
	a := &fleet.App{Name: q.Name, Functions: slices.Clone(q.Functions), Admission: fleet.AdmissionPublic,
		MaxSessions: q.MaxSessions, Origins: slices.Clone(q.Origins), AddedAt: r.now().UTC(), AddedBy: by}
	var seed []byte
	if !q.Public {
		kp, err := nkeys.CreateAccount()
		if err != nil {
			return fleet.AppCreated{}, fmt.Errorf("create the app's signing key: %w", err)
		}
		defer kp.Wipe()
		if a.Key, err = kp.PublicKey(); err != nil {
			return fleet.AppCreated{}, err
		}
		if seed, err = kp.Seed(); err != nil {
			return fleet.AppCreated{}, err
		}
		a.Admission = fleet.AdmissionSigned
	}
	err := r.update(func(tx *regTx) error {
		if old, ok := r.data.Apps[q.Name]; ok {
			return fmt.Errorf("app %s is already registered (%s, added %s); to change it, remove it (cc-bench apps rm %s: its sessions are closed) and add it again: %w",
				q.Name, old.Admission, old.AddedAt.Format("2006-01-02 15:04:05Z07:00"), q.Name, ErrExists)
		}
		for _, o := range r.data.Apps {
			if strings.EqualFold(o.Name, q.Name) {
				// Credentials carry the app as a tag, which NATS lower-cases.
				return fmt.Errorf("app %s differs from the registered app %s only in case; choose another name: %w", q.Name, o.Name, ErrExists)
			}
		}
		tx.put(kindApp, q.Name, a)
		return nil
	})
	if err != nil {
		return fleet.AppCreated{}, err
	}
	return fleet.AppCreated{App: copyApp(a), Seed: string(seed)}, nil
}

// RemoveApp deletes app name and returns what it was. Its sessions are
// refused from now on; the caller closes the live ones.
func (r *Registry) RemoveApp(name string) (fleet.App, error) {
	var out fleet.App
	err := r.update(func(tx *regTx) error {
		a, ok := r.data.Apps[name]
		if !ok {
			if tx.mayReload(kindApp, name) {
				return reloadError{kindApp, name}
			}
			return fmt.Errorf("app %s is not registered (list them with: cc-bench apps ls): %w", boundClientText(name), ErrNotFound)
		}
		tx.del(kindApp, name)
		out = copyApp(a)
		return nil
	})
	return out, err
}

// App returns a copy of app name.
func (r *Registry) App(name string) (fleet.App, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a, ok := r.data.Apps[name]
	if !ok {
		return fleet.App{}, false
	}
	return copyApp(a), true
}

// AppFold returns a copy of the app whose name is name but for case (a
// JWT tag names a session's app lower-cased; AddApp refuses names that
// differ only in case, so at most one matches).
func (r *Registry) AppFold(name string) (fleet.App, bool) {
	if a, ok := r.App(name); ok {
		return a, true
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for n, a := range r.data.Apps {
		if strings.EqualFold(n, name) {
			return copyApp(a), true
		}
	}
	return fleet.App{}, false
}

// Apps lists the apps sorted by name.
func (r *Registry) Apps() []fleet.App {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]fleet.App, 0, len(r.data.Apps))
	for _, a := range r.data.Apps {
		out = append(out, copyApp(a))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func copyApp(a *fleet.App) fleet.App {
	c := *a
	c.Functions = slices.Clone(a.Functions)
	c.Origins = slices.Clone(a.Origins)
	return c
}
