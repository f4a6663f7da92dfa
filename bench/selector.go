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
	// groups are alternatives (OR), each a list of terms that must all
	// hold (AND).
	groups [][]selTerm
}

type selTerm struct {
	key string
	// values are what the key is compared with: one for = and !=, the
	// list of in and not in; each a path.Match pattern when glob[i].
	values []string
	glob   []bool
	negate bool
	list   bool
}

// ParseSelector parses a selector. Terms separated by commas must all
// hold (AND); groups of them separated by " or " (or ";") are
// alternatives (OR). A term is
//
//	key=value        key!=value      (value may be a pattern of path.Match: * ? [a-z])
//	key in (a,b)     key not in (a,b)
//
// A key is a built-in fact (machine, ip, hostname), a label, or one of the
// facts the machine's agent reports (os, platform, platform_version,
// kernel, arch, cpus, memory, virtualization, container, agent_version:
// [fleet.FactKeys]). The built-in facts win over a label of the same
// name, and a label over an agent's fact: the operator set it. A missing
// key has the value "", so "env!=prod" selects machines without an env
// label and "env=" selects only them. The empty string selects
// everything.
//
//	role=web,location=New-Brunswick
//	hostname=web*,env!=staging
//	os=linux,platform in (debian,ubuntu)
//	role=web or role=db,env=prod
func ParseSelector(s string) (Selector, error) {
	if len(s) > maxSelectorLen {
		return Selector{}, fmt.Errorf("selector is %d characters long; at most %d are allowed", len(s), maxSelectorLen)
	}
	if strings.TrimSpace(s) == "" {
		return Selector{}, nil
	}
	var sel Selector
	for _, alt := range splitTop(s, orSep) {
		if strings.TrimSpace(alt) == "" {
			return Selector{}, fmt.Errorf("selector %q has an empty alternative: remove the extra \"or\" or \";\"", s)
		}
		var group []selTerm
		for _, raw := range splitTop(alt, commaSep) {
			t, err := parseTerm(strings.TrimSpace(raw))
			if err != nil {
				return Selector{}, err
			}
			group = append(group, t)
		}
		sel.groups = append(sel.groups, group)
	}
	return sel, nil
}

// A separator splitTop cuts at: its length at s[i:] (0: none there).
type separator func(s string, i int) int

func commaSep(s string, i int) int {
	if s[i] == ',' {
		return 1
	}
	return 0
}

// orSep is ";" or the word "or" with white space on both sides.
func orSep(s string, i int) int {
	if s[i] == ';' {
		return 1
	}
	if !isSpace(s[i]) {
		return 0
	}
	j := i + 1
	for j < len(s) && isSpace(s[j]) {
		j++
	}
	if j+2 < len(s) && strings.EqualFold(s[j:j+2], "or") && isSpace(s[j+2]) {
		return j + 3 - i
	}
	return 0
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

// splitTop cuts s at each separator outside parentheses.
func splitTop(s string, sep separator) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
			continue
		case ')':
			if depth > 0 {
				depth--
			}
			continue
		}
		if depth > 0 {
			continue
		}
		if n := sep(s, i); n > 0 {
			out = append(out, s[start:i])
			start = i + n
			i = start - 1
		}
	}
	return append(out, s[start:])
}

const termForms = "want key=value, key!=value, key in (a,b) or key not in (a,b)"

func parseTerm(s string) (selTerm, error) {
	if s == "" {
		return selTerm{}, fmt.Errorf("selector has an empty term: remove the extra comma")
	}
	if t, ok, err := parseListTerm(s); ok || err != nil {
		return t, err
	}
	i := strings.IndexAny(s, "!=")
	if i < 0 {
		return selTerm{}, fmt.Errorf("selector term %q: %s", s, termForms)
	}
	t := selTerm{key: strings.TrimSpace(s[:i])}
	rest := s[i:]
	op := "="
	switch {
	case strings.HasPrefix(rest, "!="):
		t.negate, op = true, "!="
	case rest[0] == '=':
	default:
		return selTerm{}, fmt.Errorf("selector term %q: %s", s, termForms)
	}
	value := strings.TrimSpace(rest[len(op):])
	if t.key == "" {
		return selTerm{}, fmt.Errorf("selector term %q: the key before %q is empty; want key=value", s, op)
	}
	if err := checkKey(s, t.key); err != nil {
		return selTerm{}, err
	}
	if strings.ContainsAny(value, "()") {
		return selTerm{}, fmt.Errorf("selector term %q: a value may not contain ( or ); for a list write key in (a,b)", s)
	}
	if err := t.add(s, value); err != nil {
		return selTerm{}, err
	}
	return t, nil
}

// parseListTerm parses "key in (a,b)" and "key not in (a,b)"; ok is false
// when s is not of that form.
func parseListTerm(s string) (t selTerm, ok bool, err error) {
	open := strings.IndexByte(s, '(')
	if open < 0 || strings.ContainsAny(s[:open], "=!") {
		return selTerm{}, false, nil
	}
	words := strings.Fields(s[:open])
	switch {
	case len(words) == 2 && strings.EqualFold(words[1], "in"):
	case len(words) == 3 && strings.EqualFold(words[1], "not") && strings.EqualFold(words[2], "in"):
		t.negate = true
	default:
		return selTerm{}, true, fmt.Errorf("selector term %q: %s", s, termForms)
	}
	t.key, t.list = words[0], true
	if err := checkKey(s, t.key); err != nil {
		return selTerm{}, true, err
	}
	body := strings.TrimSpace(s[open+1:])
	if !strings.HasSuffix(body, ")") || strings.ContainsAny(body[:len(body)-1], "()") {
		return selTerm{}, true, fmt.Errorf("selector term %q: the list must end with one \")\": key in (a,b)", s)
	}
	body = strings.TrimSpace(body[:len(body)-1])
	if body == "" {
		return selTerm{}, true, fmt.Errorf("selector term %q: the list is empty; name at least one value", s)
	}
	for v := range strings.SplitSeq(body, ",") {
		if v = strings.TrimSpace(v); v == "" {
			return selTerm{}, true, fmt.Errorf("selector term %q: the list has an empty value: remove the extra comma", s)
		}
		if err := t.add(s, v); err != nil {
			return selTerm{}, true, err
		}
	}
	return t, true, nil
}

func checkKey(term, key string) error {
	if bad := strings.IndexFunc(key, func(r rune) bool {
		return r <= ' ' || strings.ContainsRune("*?[]\\(),;", r)
	}); bad >= 0 {
		return fmt.Errorf("selector term %q: key %q has %q, which a key may not contain", term, key, key[bad])
	}
	return nil
}

// add appends value (a pattern when it has wildcards) to t.
func (t *selTerm) add(term, value string) error {
	glob := strings.ContainsAny(value, "*?[\\")
	if glob {
		if _, err := path.Match(value, ""); err != nil {
			return fmt.Errorf("selector term %q: bad pattern %q: %v", term, value, err)
		}
	}
	t.values, t.glob = append(t.values, value), append(t.glob, glob)
	return nil
}

// Empty reports whether s selects every machine.
func (s Selector) Empty() bool { return len(s.groups) == 0 }

// String returns s in the form ParseSelector reads.
func (s Selector) String() string {
	alts := make([]string, len(s.groups))
	for g, group := range s.groups {
		parts := make([]string, len(group))
		for i, t := range group {
			switch {
			case t.list && t.negate:
				parts[i] = t.key + " not in (" + strings.Join(t.values, ",") + ")"
			case t.list:
				parts[i] = t.key + " in (" + strings.Join(t.values, ",") + ")"
			case t.negate:
				parts[i] = t.key + "!=" + t.values[0]
			default:
				parts[i] = t.key + "=" + t.values[0]
			}
		}
		alts[g] = strings.Join(parts, ",")
	}
	return strings.Join(alts, " or ")
}

// Keys lists the keys s names, sorted, each once.
func (s Selector) Keys() []string {
	seen := map[string]bool{}
	var out []string
	for _, group := range s.groups {
		for _, t := range group {
			if !seen[t.key] {
				seen[t.key] = true
				out = append(out, t.key)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Match reports whether the machine with this id and these labels is
// selected (its agent's facts unknown: see [Selector.MatchFacts]).
func (s Selector) Match(machine string, labels map[string]string) bool {
	return s.MatchFacts(machine, labels, nil)
}

// MatchFacts reports whether the machine with this id, labels and agent
// facts (nil: none known) is selected.
func (s Selector) MatchFacts(machine string, labels map[string]string, facts *fleet.Facts) bool {
	return s.match(machine, nil, labels, facts)
}

// MatchPending reports whether s selects a pending machine: one that
// tried to connect and is not registered. Its id is whatever the one
// connecting chose, so here the fact ip is from, the address its
// connection came from as the broker saw it ("" when not recorded), not
// the id's first part: ip=10.0.0.* does not select a stranger who names
// itself 10.0.0.66_x from elsewhere. It has no labels and no facts.
func (s Selector) MatchPending(machine, from string) bool {
	return s.match(machine, &from, nil, nil)
}

// match is [Selector.MatchFacts], with the fact ip taken from *ip when
// ip is not nil.
func (s Selector) match(machine string, ip *string, labels map[string]string, facts *fleet.Facts) bool {
	if len(s.groups) == 0 {
		return true
	}
	for _, group := range s.groups {
		if matchGroup(group, machine, ip, labels, facts) {
			return true
		}
	}
	return false
}

// MatchServer reports whether s selects srv.
func (s Selector) MatchServer(srv fleet.Server) bool {
	return s.MatchFacts(srv.Machine, srv.Labels, srv.Facts)
}

func matchGroup(group []selTerm, machine string, ip *string, labels map[string]string, facts *fleet.Facts) bool {
	for _, t := range group {
		v, _ := lookup(t.key, machine, labels, facts)
		if t.key == FactIP && ip != nil {
			v = *ip
		}
		ok := false
		for i, want := range t.values {
			if t.glob[i] {
				ok, _ = path.Match(want, v)
			} else {
				ok = v == want
			}
			if ok {
				break
			}
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
		if s.MatchServer(srv) {
			out = append(out, srv)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Machine < out[j].Machine })
	return out
}

// lookup is key's value for a machine, and whether the machine has the
// key: a built-in fact first, then a label, then its agent's fact.
func lookup(key, machine string, labels map[string]string, facts *fleet.Facts) (string, bool) {
	switch key {
	case FactMachine:
		return machine, true
	case FactIP:
		ip, _, _ := strings.Cut(machine, "_")
		return ip, true
	case FactHostname:
		_, host, _ := strings.Cut(machine, "_")
		return host, true
	}
	if v, ok := labels[key]; ok {
		return v, true
	}
	return facts.Fact(key)
}

// FleetKeys lists the keys a selector can test on servers, sorted: the
// built-in facts, every label one of them has, and every agent fact one
// of them reports.
func FleetKeys(servers []fleet.Server) []string {
	seen := map[string]bool{FactMachine: true, FactIP: true, FactHostname: true}
	for _, srv := range servers {
		for k := range srv.Labels {
			seen[k] = true
		}
		for _, k := range fleet.FactKeys {
			if _, ok := srv.Facts.Fact(k); ok {
				seen[k] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// NoMatchHint explains why s selects none of servers, for an error
// message: the keys it names that no server has (with the nearest key one
// has: "did you mean"), or else that no machine holds the values it asks
// for. It returns "" when s selects some of servers.
func (s Selector) NoMatchHint(servers []fleet.Server) string {
	if len(s.Filter(servers)) > 0 {
		return ""
	}
	if len(servers) == 0 {
		return "no machine is ONLINE"
	}
	if hint := s.KeyHint(servers); hint != "" {
		return hint
	}
	return fmt.Sprintf("none of the %d ONLINE machines has the values %q asks for (keys in the fleet: %s)", len(servers), s.String(), strings.Join(FleetKeys(servers), ", "))
}

// KeyHint names the keys s tests that none of servers has, each with the
// nearest key one has ("did you mean"): most often why a selection chose
// nobody. It returns "" when every key s names is known.
func (s Selector) KeyHint(servers []fleet.Server) string {
	known := FleetKeys(servers)
	has := map[string]bool{}
	for _, k := range known {
		has[k] = true
	}
	var notes []string
	for _, k := range s.Keys() {
		if has[k] {
			continue
		}
		note := fmt.Sprintf("no ONLINE machine has the key %q", k)
		if near := NearestKey(k, known); near != "" {
			note += fmt.Sprintf(" (did you mean %q?)", near)
		}
		notes = append(notes, note)
	}
	return strings.Join(notes, "; ")
}

// NearestKey is the key of known closest to key (differing only in case,
// or within an edit per three characters, at least one), or "" when none
// is.
func NearestKey(key string, known []string) string {
	best, bestD := "", max(1, len(key)/3)+1
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return k
		}
		if d := editDistance(key, k, bestD); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}
