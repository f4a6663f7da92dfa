package controlsvc

import (
	"context"
	"strings"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// A machine's key is replaced by accepting a new key for a registered id
// (a rebuilt host), by machines add --replace, or by an import. Until then
// the callout admitted only the old key, so every live connection of the
// machine was made with it, and every one is closed: a host whose key was
// replaced (stolen, or the attacker's key accepted by mistake) must not
// keep answering calls.
//
// The callout tags each agent JWT with the key it was issued for
// (keyTagPrefix). A connection authorised with the old key whose connect
// event arrives after the change is closed on arrival, and a resync closes
// any the events missed.

// keyTagPrefix starts the JWT tag naming an agent's key. The broker keeps
// tags in lower case; nkeys are base32 in upper case, so the comparison
// ignores case.
const keyTagPrefix = "key:"

// staleUser stands for a connection whose key is no longer on record, in
// a CONNZ snapshot: onRecord refuses it.
const staleUser = "\x00stale"

// keyTagMatches reports whether tags name key, or name no key at all (a
// JWT issued before keys were tagged: the resync after its expiry catches
// it).
func keyTagMatches(tags []string, key string) bool {
	for _, t := range tags {
		if k, ok := strings.CutPrefix(t, keyTagPrefix); ok {
			return strings.EqualFold(k, key)
		}
	}
	return true
}

// connUser is user, or staleUser when the connection's key tag names a key
// other than the one on record for its machine.
func connUser(reg *Registry, user string, tags []string) string {
	if id, ok := strings.CutPrefix(user, agentUserPrefix); ok {
		if m, ok := reg.Machine(id); ok && !keyTagMatches(tags, m.Key) {
			return staleUser
		}
	}
	return user
}

// changeMachineKey runs change, a registry change that may give machine id
// another key; when it replaced one, every live connection of the machine
// is closed. No connect event is admitted between the change and the
// listing of the connections to close.
//
// A machine moved to another site (or between a site and the hub) is
// closed too: it is admitted, and believed ONLINE, only at its own place.
func (s *Service) changeMachineKey(ctx context.Context, id string, change func() (fleet.MachineChange, error)) (fleet.MachineChange, error) {
	var (
		old   fleet.Machine
		had   bool
		c     fleet.MachineChange
		err   error
		moved bool
	)
	conns := s.presence.admitted(func() []string {
		old, had = s.reg.Machine(id)
		c, err = change()
		if moved = err == nil && had && old.Site != c.Site; err == nil && (c.ReplacedKey != "" || moved) {
			return []string{agentUserPrefix + id}
		}
		return nil
	})
	if err != nil || (c.ReplacedKey == "" && !moved) {
		return c, err
	}
	c.Closed = s.presence.kick(ctx, conns)
	if c.ReplacedKey == "" {
		s.log.Warn("machine moved; closed its connections at its old place", "machine", id,
			"from_site", old.Site, "to_site", c.Site, "closed", c.Closed)
		return c, nil
	}
	s.log.Warn("machine key replaced; closed the connections made with the old key",
		"machine", id, "old_key", c.ReplacedKey, "new_key", c.Key, "closed", c.Closed)
	return c, nil
}

// importMachines runs an import and closes the live connections of every
// machine whose key it replaced.
func (s *Service) importMachines(ctx context.Context, reqs []fleet.MachineRequest, by string) (fleet.ImportResult, error) {
	// Written outside presence's admission lock (one replicated write
	// per entry in the bucket: connect events would wait for all of
	// them), which is taken only to list the re-keyed machines'
	// connections: a connect event handled before the listing is in
	// it, one handled after meets the new key (onRecord) and is refused.
	n, rekeyed, err := s.reg.ImportMachines(reqs, by)
	users := make([]string, len(rekeyed))
	for i, id := range rekeyed {
		users[i] = agentUserPrefix + id
	}
	conns := s.presence.admitted(func() []string { return users })
	r := fleet.ImportResult{Added: n, Replaced: len(rekeyed)}
	if err != nil {
		// Those re-keyed before the failure are closed all the same.
		s.presence.kick(ctx, conns)
		return fleet.ImportResult{}, err
	}
	if len(conns) > 0 {
		r.Closed = s.presence.kick(ctx, conns)
		s.log.Warn("import replaced machine keys; closed the connections made with the old keys",
			"machines", len(rekeyed), "closed", r.Closed)
	}
	return r, nil
}
