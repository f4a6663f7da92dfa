package controlsvc

import (
	"crypto/rand"
	"encoding/hex"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// expiryGrace is how long a machine whose only connection closed because
// its credentials expired stays ONLINE while it reconnects, so the routine
// re-authorisation does not flap it.
const expiryGrace = 10 * time.Second

// connKey names one connection across a cluster: cids are per server.
type connKey struct {
	server string
	cid    uint64
}

type connState struct {
	user string // "agent:<id>" or "operator:<name>"
	gen  uint64 // presence generation when it was added
	// start is when its broker accepted the connection, as its connect
	// event said (zero: added by a resync); see newerConn.
	start time.Time
	// ip is the connection's address as its broker reported it, loc
	// where that is (noteIP).
	ip  string
	loc *fleet.Location
	// facts are what its agent said in its connection name (nil: none).
	facts *fleet.Facts
}

type machineState struct {
	conns map[connKey]struct{}
	since time.Time
	// leaving is set while an expired-credential disconnect is in its
	// grace; leavingGen names that grace so a stale timer is recognised.
	leaving    *time.Timer
	leavingGen uint64
	// facts are the newest its connections reported (nil: none yet).
	facts *fleet.Facts
}

// presence is the ONLINE set, built from the broker's connect/disconnect
// events and CONNZ snapshots, de-duplicated by (server, client id). A
// machine is ONLINE while it has at least one connection.
type presence struct {
	// epoch names this run's numbering of events (fleet.PresenceSnapshot).
	epoch      string
	mu         sync.Mutex
	conns      map[connKey]connState
	machines   map[string]*machineState
	tombstones map[connKey]time.Time
	gen        uint64
	seq        uint64
	// ver changes whenever anything a snapshot shows changes.
	ver      uint64
	graceGen uint64
	now      func() time.Time
	labels   func(id string) map[string]string
	emit     func(fleet.PresenceEvent) // called under mu, in seq order
	// known are the machines a previous run of the service saw ONLINE
	// (see presence_store.go): their first joined is not repeated.
	known map[string]bool
}

func newPresence(labels func(string) map[string]string, emit func(fleet.PresenceEvent)) *presence {
	return &presence{
		epoch:      newEpoch(),
		conns:      map[connKey]connState{},
		machines:   map[string]*machineState{},
		tombstones: map[connKey]time.Time{},
		now:        time.Now,
		labels:     labels,
		emit:       emit,
	}
}

// connected records a connection; a machine's first one emits joined.
func (p *presence) connected(k connKey, user string) { p.connectedAt(k, user, time.Time{}) }

// connectedAt is connected for a connection its broker accepted at start.
func (p *presence) connectedAt(k connKey, user string, start time.Time) {
	p.connectedWith(k, user, start, nil)
}

// connectedWith is connectedAt for a connection whose agent reported
// facts (nil: none).
func (p *presence) connectedWith(k connKey, user string, start time.Time, facts *fleet.Facts) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.addLocked(k, user, facts)
	if c, ok := p.conns[k]; ok && c.start.IsZero() {
		c.start = start
		p.conns[k] = c
	}
}

// newerConn reports whether connection a was opened after connection b.
// A broker numbers its connections in the order it accepts them, so on
// one broker the higher id is the newer, whatever order their connect
// events came in; across brokers the start times the events carried
// decide. It returns false when that cannot be told (a start unknown).
func newerConn(a connKey, aStart time.Time, b connKey, bStart time.Time) bool {
	if a.server == b.server {
		return a.cid > b.cid
	}
	return !aStart.IsZero() && !bStart.IsZero() && aStart.After(bStart)
}

// startOf is when connection k was accepted, as far as presence knows.
func (p *presence) startOf(k connKey) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns[k].start
}

// addLocked adds connection k of user, with the facts its agent reported
// (nil: none). A machine's first connection emits joined (with its
// facts); a further one whose facts differ from the machine's emits
// updated: the agent reconnected to report new facts (agent/facts.go).
func (p *presence) addLocked(k connKey, user string, facts *fleet.Facts) {
	if _, dead := p.tombstones[k]; dead {
		return
	}
	if c, dup := p.conns[k]; dup {
		if !namedLater(c.user, user) {
			if facts != nil && c.facts == nil {
				// Known from its event without facts, now from CONNZ.
				c.facts = facts
				p.conns[k] = c
				if id, ok := strings.CutPrefix(user, agentUserPrefix); ok && p.machines[id] != nil && p.machines[id].facts == nil {
					p.machines[id].facts = facts
					p.ver++
				}
			}
			return
		}
		// Held under the name it had half-way through its
		// authorisation: it is this user's.
		delete(p.conns, k)
	}
	p.gen++
	p.ver++
	p.conns[k] = connState{user: user, gen: p.gen, facts: facts}
	id, ok := strings.CutPrefix(user, agentUserPrefix)
	if !ok {
		return
	}
	m := p.machines[id]
	if m == nil {
		m = &machineState{conns: map[connKey]struct{}{}, since: p.now().UTC()}
		p.machines[id] = m
	}
	m.conns[k] = struct{}{}
	prev := m.facts
	if facts != nil {
		m.facts = facts // the newest connection's word
	}
	changed := facts != nil && prev != nil && !fleet.FactsEqual(prev, facts)
	if m.leaving != nil {
		m.leaving.Stop()
		m.leaving = nil
		if changed {
			p.emitLocked(fleet.EventUpdated, id, "")
		}
		return
	}
	if len(m.conns) == 1 {
		if p.known[id] {
			delete(p.known, id) // watchers already have it as ONLINE
			return
		}
		p.emitLocked(fleet.EventJoined, id, "")
		return
	}
	if changed {
		p.emitLocked(fleet.EventUpdated, id, "")
	}
}

// namedLater reports whether a connection presence holds as user held
// is really user's: held is not a name the callout gives (agent:,
// operator:, session:) and user is.
//
// nats-server v2.15.2 applies a callout's answer in steps
// (auth_callout.go, processReply): the client joins the FLEET account
// (RegisterNkeyUser) before it takes the answer's name, and its connect
// event is sent after both. A CONNZ in between lists the connection in
// FLEET under its raw nkey: a resync then held it under that name, the
// connect event naming the machine found it held and was dropped, and
// every later resync found it held too: a connected, answering agent was
// never ONLINE (seen in a 10,000-agent reconnect storm; the raw-nkey
// disconnect events of callouts that timed out half-way are the same
// step).
func namedLater(held, user string) bool {
	issued := func(u string) bool {
		return strings.HasPrefix(u, agentUserPrefix) || strings.HasPrefix(u, operatorUserPrefix) || strings.HasPrefix(u, sessionUserPrefix)
	}
	return held != user && !issued(held) && issued(user)
}

// noteIP records connection k's address ip (from its connect event or
// CONNZ) and where it is (locate, nil: nowhere), if presence holds k and
// did not know it yet. A change shows in the next snapshot.
func (p *presence) noteIP(k connKey, ip string, locate func(string) *fleet.Location) {
	if ip == "" {
		return
	}
	p.mu.Lock()
	c, ok := p.conns[k]
	p.mu.Unlock()
	if !ok || c.ip == ip {
		return
	}
	var loc *fleet.Location
	if locate != nil {
		loc = locate(ip) // outside the lock: a database lookup
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[k]; ok && c.ip != ip {
		c.ip, c.loc = ip, loc
		p.conns[k] = c
		p.ver++
	}
}

// factsRefresh reports whether connection k, an older connection of a
// machine that connected again from ip with facts, is one its agent
// replaces to report new facts: from the same address, with the same
// boot time and other facts that differ. A refresh never changes the
// boot time (a reboot restarts the agent, and the agent reports its
// first reading while the boot time only wobbles: agent/facts.go), so
// two hosts sharing a key behind one address (a cloned image behind a
// NAT), which differ at least in it, are a duplicate, logged and
// audited, not a silent refresh. The facts are the agent's own word: a
// holder of the key behind the host's own address who copies its boot
// time passes as a refresh; hosts sharing a key by accident do not.
func (p *presence) factsRefresh(k connKey, ip string, facts *fleet.Facts) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.conns[k]
	return ok && facts != nil && c.facts != nil && c.ip != "" && c.ip == ip &&
		c.facts.BootTime.Equal(facts.BootTime) && !fleet.FactsEqual(c.facts, facts)
}

// disconnected removes a connection; a machine's last one emits left.
func (p *presence) disconnected(k connKey, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, held := p.conns[k]
	if site, _ := serverSite(k.server); held || site == "" || len(p.tombstones) < maxSiteTombstones {
		p.tombstones[k] = p.now()
	}
	p.removeLocked(k, reason)
}

// dropped removes connections presence should no longer count, whatever
// their broker says later: a removed machine's, when the kick could not
// reach its broker (a site cut off from the hub). Their disconnect events,
// if they ever come, find nothing to remove.
func (p *presence) dropped(conns []connKey, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range conns {
		p.tombstones[k] = p.now()
		p.removeLocked(k, reason)
	}
}

// superseded removes a machine's older connections at a remote site as
// its newer one arrives (one machine, one connection: the newer wins, see
// Service.supersede), without waiting for their disconnect events: a site
// that forges connects for its own machines with ever new ids adds one
// connection to presence, not one per event. No tombstone is kept.
func (p *presence) superseded(conns []connKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range conns {
		p.removeLocked(k, "superseded by a newer connection")
	}
}

// maxSiteTombstones bounds the tombstones kept while remote sites' ones
// are still added: past it a site's disconnect of a connection presence
// does not hold leaves none (the hub's always do). A site forging
// disconnects for made-up connections cannot grow the map without bound.
const maxSiteTombstones = 100000

func (p *presence) removeLocked(k connKey, reason string) {
	c, ok := p.conns[k]
	if !ok {
		return
	}
	delete(p.conns, k)
	p.ver++
	id, ok := strings.CutPrefix(c.user, agentUserPrefix)
	if !ok {
		return
	}
	m := p.machines[id]
	if m == nil {
		return
	}
	delete(m.conns, k)
	if len(m.conns) > 0 {
		return
	}
	if reason == "Authentication Expired" {
		p.graceGen++
		g := p.graceGen
		m.leaving, m.leavingGen = time.AfterFunc(expiryGrace, func() { p.expireGrace(id, g) }), g
		return
	}
	delete(p.machines, id)
	p.emitLocked(fleet.EventLeft, id, reason)
}

// expireGrace ends the grace of machine id if grace g (0: any) is still the
// one running, so a stale timer that lost the race to a reconnect cannot
// cut a later grace short.
func (p *presence) expireGrace(id string, g uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := p.machines[id]; m != nil && m.leaving != nil && (g == 0 || m.leavingGen == g) && len(m.conns) == 0 {
		delete(p.machines, id)
		p.emitLocked(fleet.EventLeft, id, "credentials expired and the machine did not reconnect")
	}
}

func (p *presence) emitLocked(event, id, reason string) {
	p.seq++
	p.ver++
	var facts *fleet.Facts
	if m := p.machines[id]; m != nil && event != fleet.EventLeft {
		facts = m.facts
	}
	p.emit(fleet.PresenceEvent{Event: event, Machine: id, Labels: p.labels(id), Time: p.now().UTC(), Seq: p.seq, Epoch: p.epoch, Reason: reason, Facts: facts})
}

// serverGone drops every connection of a broker that shut down.
func (p *presence) serverGone(server string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.conns {
		if k.server == server {
			p.removeLocked(k, "broker "+server+" shut down")
		}
	}
}

// generation marks the start of a resync: connections added after it are
// newer than the snapshot and are kept whatever it says.
func (p *presence) generation() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen
}

// resync folds in CONNZ snapshots. For every server that answered, its
// connections become exactly the snapshot's (bar those added since gen or
// already known to be closed). A server that is alive (answered the ping)
// but sent no CONNZ keeps what is known of it; any other server is gone.
//
// taken is when the snapshot was asked for. A tombstone (a disconnect
// event) older than taken by more than tombstoneTrust loses to a snapshot
// that still lists the connection: events arrive within milliseconds, so
// a connection the broker still lists seconds after its disconnect event
// is alive, and the event was not about it as presence understood (seen
// once in a 10,000-agent reconnect storm, where it left a connected,
// subscribed agent out of presence for good). The zero time trusts every
// tombstone.
func (p *presence) resync(gen uint64, snap map[string]map[uint64]string, alive map[string]bool, taken time.Time) {
	p.resyncIn(nil, gen, snap, alive, taken, nil)
}

// resyncIn is resync for the servers in (nil: all) only: the connections
// of other servers are left as they are. facts are the facts CONNZ's
// connection names carried (nil: none).
func (p *presence) resyncIn(in func(server string) bool, gen uint64, snap map[string]map[uint64]string, alive map[string]bool, taken time.Time,
	facts map[connKey]*fleet.Facts) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range goneInResync(p.conns, func(c connState) uint64 { return c.gen }, in, gen, snap, alive) {
		p.removeLocked(g.k, g.reason)
	}
	for server, conns := range snap {
		for cid, user := range conns {
			if user == keepUser {
				continue
			}
			k := connKey{server, cid}
			if t, dead := p.tombstones[k]; dead && !taken.IsZero() && t.Before(taken.Add(-tombstoneTrust)) {
				delete(p.tombstones, k)
			}
			p.addLocked(k, user, facts[k])
		}
	}
	cutoff := p.now().Add(-2 * time.Minute)
	for k, t := range p.tombstones {
		if t.Before(cutoff) {
			delete(p.tombstones, k)
		}
	}
}

// tombstoneTrust is how long a disconnect event outranks a CONNZ snapshot
// that still lists the connection.
const tombstoneTrust = 5 * time.Second

// missingFrom lists the connections, known since before gen, of servers
// that answered in snap but that snap does not list: the ones resync
// would drop.
func (p *presence) missingFrom(gen uint64, snap map[string]map[uint64]string) []connKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []connKey
	for k, c := range p.conns {
		if c.gen > gen {
			continue
		}
		if conns, answered := snap[k.server]; answered {
			if _, listed := conns[k.cid]; !listed {
				out = append(out, k)
			}
		}
	}
	return out
}

// snapshot returns the ONLINE machines and the seq of the last event folded in.
func (p *presence) snapshot() fleet.PresenceSnapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := fleet.PresenceSnapshot{Seq: p.seq, Epoch: p.epoch, Time: p.now().UTC(), Servers: make([]fleet.Server, 0, len(p.machines))}
	for id, m := range p.machines {
		sv := fleet.Server{Machine: id, Labels: p.labels(id), Since: m.since, Connections: len(m.conns), Facts: m.facts}
		// The address of its newest connection (one machine, one
		// connection, bar a moment while the older is closed).
		var newest uint64
		for k := range m.conns {
			if c := p.conns[k]; c.ip != "" && c.gen >= newest {
				newest, sv.IP, sv.Location = c.gen, c.ip, c.loc
			}
		}
		out.Servers = append(out.Servers, sv)
	}
	sort.Slice(out.Servers, func(i, j int) bool { return out.Servers[i].Machine < out.Servers[j].Machine })
	return out
}

// onlineIDs returns the ONLINE machines' ids, sorted.
func (p *presence) onlineIDs() []string {
	p.mu.Lock()
	ids := make([]string, 0, len(p.machines))
	for id := range p.machines {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	sort.Strings(ids)
	return ids
}

// version changes whenever anything snapshot returns but Time changes.
func (p *presence) version() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ver
}

// count is the number of machines ONLINE.
func (p *presence) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.machines)
}

// online reports whether machine id is ONLINE.
func (p *presence) online(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.machines[id]
	return ok
}

// connsOf lists the connections of user (for closing them).
func (p *presence) connsOf(user string) []connKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []connKey
	if id, ok := strings.CutPrefix(user, agentUserPrefix); ok {
		// Every agent connect event asks (newest wins): a scan of all
		// connections made a 10,000-agent fleet's admission quadratic.
		if m := p.machines[id]; m != nil {
			for k := range m.conns {
				out = append(out, k)
			}
		}
		return out
	}
	for k, c := range p.conns {
		if c.user == user {
			out = append(out, k)
		}
	}
	return out
}

// newEpoch is a random name for this run's numbering of presence events.
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// goneConn is a connection a resync found gone, and why.
type goneConn struct {
	k      connKey
	reason string
}

// goneInResync lists the connections of conns (machines' or sessions')
// that a resync of generation gen shows gone: those of a server in (nil:
// all) that no longer answers and is not alive, and those its CONNZ
// pages in snap do not list. Connections added after gen are left alone.
func goneInResync[C, S any](conns map[connKey]C, genOf func(C) uint64, in func(string) bool, gen uint64,
	snap map[string]map[uint64]S, alive map[string]bool) []goneConn {
	var gone []goneConn
	for k, c := range conns {
		if genOf(c) > gen || in != nil && !in(k.server) {
			continue
		}
		listed, answered := snap[k.server]
		if !answered && alive[k.server] {
			continue
		}
		if !answered {
			gone = append(gone, goneConn{k, "broker " + k.server + " no longer answers"})
			continue
		}
		if _, still := listed[k.cid]; !still {
			gone = append(gone, goneConn{k, "connection gone (found by resync)"})
		}
	}
	return gone
}
