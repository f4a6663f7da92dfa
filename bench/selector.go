package bench

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// maxSelectorLen bounds a selector's text; it comes from users.
const maxSelectorLen = 4096

// Built-in facts a [Selector] may test besides labels. They win over a
// label of the same name.
const (
	FactMachine  = "machine"  // the machine id, e.g. 10.0.0.5_web01
	FactIP       = "ip"       // the id before its first "_"
	FactHostname = "hostname" // the id after its first "_"
)

// Selector chooses machines by labels and facts. Its zero value selects
// every machine. Parse one with [ParseSelector].
type Selector struct {
	terms []selTerm
}

type selTerm struct {
	key, pattern string
	negate, glob bool
}

// ParseSelector parses a selector: terms separated by commas, all of which
// must hold (AND). A term is key=value, key!=value, or key=pattern with the
// wildcards of [path.Match] (* ? [a-z]). A key is a label or one of the facts
// machine, ip and hostname. A missing label has the value "", so
// "env!=prod" selects machines without an env label and "env=" selects only
// them. The empty string selects everything.
//
//	role=web,location=New-Brunswick
//	hostname=web*,env!=staging
func ParseSelector(s string) (Selector, error) {
	if len(s) > maxSelectorLen {
		return Selector{}, fmt.Errorf("selector is %d characters long; at most %d are allowed", len(s), maxSelectorLen)
	}
	if strings.TrimSpace(s) == "" {
		return Selector{}, nil
	}
	var sel Selector
	for _, raw := range strings.Split(s, ",") {
		t, err := parseTerm(strings.TrimSpace(raw))
		if err != nil {
			return Selector{}, err
		}
		sel.terms = append(sel.terms, t)
	}
	return sel, nil
}

func parseTerm(s string) (selTerm, error) {
	if s == "" {
		return selTerm{}, fmt.Errorf("selector has an empty term: remove the extra comma")
	}
	i := strings.IndexAny(s, "!=")
	if i < 0 {
		return selTerm{}, fmt.Errorf("selector term %q: want key=value or key!=value", s)
	}
	t := selTerm{key: strings.TrimSpace(s[:i])}
	rest := s[i:]
	switch {
	case strings.HasPrefix(rest, "!="):
		t.negate, t.pattern = true, rest[2:]
	case rest[0] == '=':
		t.pattern = rest[1:]
	default:
		return selTerm{}, fmt.Errorf("selector term %q: want key=value or key!=value", s)
	}
	t.pattern = strings.TrimSpace(t.pattern)
	if t.key == "" {
		return selTerm{}, fmt.Errorf("selector term %q: the key before %q is empty; want key=value", s, rest[:len(rest)-len(t.pattern)])
	}
	if bad := strings.IndexFunc(t.key, func(r rune) bool {
		return r <= ' ' || strings.ContainsRune("*?[]\\", r)
	}); bad >= 0 {
		return selTerm{}, fmt.Errorf("selector term %q: key %q has %q, which a key may not contain", s, t.key, t.key[bad])
	}
	if strings.ContainsAny(t.pattern, "*?[\\") {
		if _, err := path.Match(t.pattern, ""); err != nil {
			return selTerm{}, fmt.Errorf("selector term %q: bad pattern %q: %v", s, t.pattern, err)
		}
		t.glob = true
	}
	return t, nil
}

// Empty reports whether s selects every machine.
func (s Selector) Empty() bool { return len(s.terms) == 0 }

// String returns s in the form ParseSelector reads.
func (s Selector) String() string {
	parts := make([]string, len(s.terms))
	for i, t := range s.terms {
		op := "="
		if t.negate {
			op = "!="
		}
		parts[i] = t.key + op + t.pattern
	}
	return strings.Join(parts, ",")
}

// Match reports whether the machine with this id and these labels is
// selected.
func (s Selector) Match(machine string, labels map[string]string) bool {
	for _, t := range s.terms {
		v := fact(t.key, machine, labels)
		ok := v == t.pattern
		if t.glob {
			ok, _ = path.Match(t.pattern, v)
		}
		if ok == t.negate {
			return false
		}
	}
	return true
}

// Filter returns the servers s selects, sorted by machine id. It does not
// modify servers.
func (s Selector) Filter(servers []fleet.Server) []fleet.Server {
	out := make([]fleet.Server, 0, len(servers))
	for _, srv := range servers {
		if s.Match(srv.Machine, srv.Labels) {
			out = append(out, srv)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Machine < out[j].Machine })
	return out
}

func fact(key, machine string, labels map[string]string) string {
	switch key {
	case FactMachine:
		return machine
	case FactIP:
		ip, _, _ := strings.Cut(machine, "_")
		return ip
	case FactHostname:
		_, host, _ := strings.Cut(machine, "_")
		return host
	}
	return labels[key]
}
