package controlsvc

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Admitted sessions wait for their connection's CONNECT event.
const (
	// sessionPendingTTL is how long the attributes of an admitted
	// session wait for its CONNECT event: past it (the client gave up,
	// or the broker refused it after all) they are dropped.
	sessionPendingTTL = 30 * time.Second
)

// maxPendingSessions bounds the admitted sessions waiting at once; past
// it the oldest are dropped first. A variable so a test can lower it.
var maxPendingSessions = 100000

// sessionPresence is the ONLINE set of sessions, keyed by session id:
// what the callout admitted (admitted), joined with the brokers' CONNECT
// and DISCONNECT events of users "session:<id>" and their CONNZ
// (presence_events.go and presence_resync.go route them here, not to the
// machines' presence). One session id is served by one connection, its
// newest: an older one is superseded and closed, as for machines.
//
// Its events are numbered with a seq and epoch of its own
// (fleet.SessionEvent): a machine watcher never sees them, and a session
// watcher tells its gaps by them.
//
// Silent death needs nothing of its own: the broker's ping settings
// (broker.DefaultPingInterval, MaxPingsOut) drop a dead connection of any
// kind, WebSocket included, and its DISCONNECT event reaches here; a
// lost event is caught by the periodic resync. Unlike machines, a session
// has no grace when its credentials expire: its token only admits, and
// a reconnect is a new admission.
type sessionPresence struct {
	epoch string
	now   func() time.Time
	// locate finds where an address is (nil: nowhere).
	locate func(ip string) *fleet.Location
	// appOf looks an app up by name, case-insensitively (a JWT tag, where
	// a session's app is named after a restart, is lower-cased), nil:
	// apps unknown. A session whose app is gone is not put ONLINE, and is
	// closed. App names compare case-insensitively here throughout.
	appOf func(name string) (fleet.App, bool)
	// emit is called under mu, in seq order.
	emit func(fleet.SessionEvent)
	// kick closes connections (the tracker's kick).
	kick func(ctx context.Context, conns []connKey) int
	// awaiting are the sessions connected before their admission by
	// another replica arrived (session_share.go), closed when it does
	// (under mu).
	awaiting map[string]chan struct{}

	mu         sync.Mutex
	seq, gen   uint64
	ver        uint64
	pending    map[string]*pendingSession
	pendingQ   []pendingRef
	pendingNew map[string]int // admitted, not ONLINE, by app
	conns      map[connKey]sessionConn
	sessions   map[string]*sessionState
	online     map[string]int // ONLINE, by app
	// fromAddr counts the sessions ONLINE or admitted and not ONLINE
	// (as online plus pendingNew), by app and source address
	// (addrKey): the per-address cap of public apps.
	fromAddr   map[string]int
	tombstones map[connKey]time.Time
}

type pendingSession struct {
	s  fleet.Session
	at time.Time
	// counted: counted in pendingNew and fromAddr (the session was not
	// ONLINE).
	counted bool
}

type pendingRef struct {
	id string
	at time.Time
}

type sessionConn struct {
	id  string
	gen uint64
}

type sessionState struct {
	s    fleet.Session
	conn connKey
	// addr is the fromAddr key the session is counted under.
	addr string
}

// addrKey is the fromAddr key of app's sessions from address ip: the
// app (case-insensitively) and the address as the per-address rate keys
// it (an IPv4 address, an IPv6 address's /64).
func addrKey(app, ip string) string { return strings.ToLower(app) + " " + limiterKey(ip) }

func newSessionPresence(now func() time.Time, emit func(fleet.SessionEvent)) *sessionPresence {
	if now == nil {
		now = time.Now
	}
	return &sessionPresence{epoch: newEpoch(), now: now, emit: emit,
		pending: map[string]*pendingSession{}, pendingNew: map[string]int{}, conns: map[connKey]sessionConn{},
		sessions: map[string]*sessionState{}, online: map[string]int{}, fromAddr: map[string]int{}, tombstones: map[connKey]time.Time{}}
}

// admitted keeps the attributes of a session the callout is about to let
// in, until the CONNECT event of its connection arrives (at most
// sessionPendingTTL). The callout calls it just before it answers.
func (p *sessionPresence) admitted(s fleet.Session) {
	if fleet.ValidateSessionID(s.ID) != nil {
		return
	}
	now := p.now()
	if s.Location == nil && s.IP != "" && p.locate != nil {
		s.Location = p.locate(s.IP)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.prunePendingLocked(now)
	p.dropPendingLocked(s.ID)
	for len(p.pending) >= maxPendingSessions && len(p.pendingQ) > 0 {
		r := p.pendingQ[0]
		p.pendingQ = p.pendingQ[1:]
		if e := p.pending[r.id]; e != nil && e.at.Equal(r.at) {
			p.dropPendingLocked(r.id)
		}
	}
	e := &pendingSession{s: s, at: now, counted: p.sessions[s.ID] == nil}
	if e.counted {
		p.pendingNew[strings.ToLower(s.App)]++
		p.countAddrLocked(addrKey(s.App, s.IP), 1)
	}
	p.pending[s.ID] = e
	p.pendingQ = append(p.pendingQ, pendingRef{s.ID, now})
	if ch := p.awaiting[s.ID]; ch != nil {
		close(ch)
		delete(p.awaiting, s.ID)
	}
}

// prunePendingLocked drops the admitted sessions whose CONNECT did not
// come in time.
func (p *sessionPresence) prunePendingLocked(now time.Time) {
	cutoff := now.Add(-sessionPendingTTL)
	for len(p.pendingQ) > 0 {
		r := p.pendingQ[0]
		e := p.pending[r.id]
		if e != nil && e.at.Equal(r.at) && !r.at.Before(cutoff) {
			return
		}
		p.pendingQ = p.pendingQ[1:]
		if e != nil && e.at.Equal(r.at) {
			p.dropPendingLocked(r.id)
		}
	}
}

func (p *sessionPresence) dropPendingLocked(id string) {
	e := p.pending[id]
	if e == nil {
		return
	}
	delete(p.pending, id)
	if e.counted {
		app := strings.ToLower(e.s.App)
		if p.pendingNew[app]--; p.pendingNew[app] <= 0 {
			delete(p.pendingNew, app)
		}
		p.countAddrLocked(addrKey(e.s.App, e.s.IP), -1)
	}
}

// takePendingLocked returns (and forgets) what admitted kept of session
// id, if it is still fresh.
func (p *sessionPresence) takePendingLocked(id string, now time.Time) (fleet.Session, bool) {
	p.prunePendingLocked(now)
	e := p.pending[id]
	if e == nil {
		return fleet.Session{}, false
	}
	p.dropPendingLocked(id)
	return e.s, true
}

// onlineOf is how many sessions of app are ONLINE, or admitted in the
// last sessionPendingTTL and not connected yet: what the app's cap counts,
// so a burst of admissions whose connections have not arrived yet cannot
// go past it.
func (p *sessionPresence) onlineOf(app string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.prunePendingLocked(p.now())
	app = strings.ToLower(app)
	return p.online[app] + p.pendingNew[app]
}

// onlineFrom is how many sessions of app from address ip (its IPv4
// address, its IPv6 /64) are ONLINE, or admitted in the last
// sessionPendingTTL and not connected yet: what the per-address cap of a
// public app counts.
func (p *sessionPresence) onlineFrom(app, ip string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.prunePendingLocked(p.now())
	return p.fromAddr[addrKey(app, ip)]
}

func (p *sessionPresence) countAddrLocked(key string, d int) {
	if p.fromAddr[key] += d; p.fromAddr[key] <= 0 {
		delete(p.fromAddr, key)
	}
}

// connectedOf is how many sessions of app are ONLINE.
func (p *sessionPresence) connectedOf(app string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.online[strings.ToLower(app)]
}

// sessionConnInfo is what a connect event or CONNZ says of a session's
// connection.
type sessionConnInfo struct {
	id, ip string
	tags   []string
}

// appFromTags returns the app a session connection's JWT tags name.
func appFromTags(tags []string) string {
	for _, t := range tags {
		if a, ok := strings.CutPrefix(t, sessionAppTagPrefix); ok {
			return a
		}
	}
	return ""
}

// connected records session c's connection k; a session's first one
// emits joined. It returns the connections to close: an older connection
// of the same session (superseded: one session, one connection, the
// newest), or k itself when its app is gone.
func (p *sessionPresence) connected(k connKey, c sessionConnInfo) []connKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addLocked(k, c, p.now())
}

func (p *sessionPresence) addLocked(k connKey, c sessionConnInfo, now time.Time) []connKey {
	if _, dead := p.tombstones[k]; dead {
		return nil
	}
	if sc, dup := p.conns[k]; dup && sc.id == c.id {
		return nil
	}
	s, known := p.takePendingLocked(c.id, now)
	if !known {
		// Attributes unknown (the control service restarted since the
		// session was admitted, or its connection was found by a resync
		// after the admitted entry expired): the session is ONLINE all
		// the same, with what is known for sure: its id, its app from
		// its JWT's tag (lower-cased), the address its broker reports,
		// and the app's functions and admission if the app is known.
		// Since is then when this run of the service first saw it.
		s = fleet.Session{ID: c.id, App: appFromTags(c.tags)}
		if p.appOf != nil {
			if a, ok := p.appOf(s.App); ok {
				s.App, s.Admission, s.Functions = a.Name, a.Admission, a.Functions
			}
		}
	}
	if p.appOf != nil {
		if _, ok := p.appOf(s.App); !ok {
			// Admitted, then its app removed before this event arrived:
			// the removal's closeApp could not see it yet. Closed now.
			p.tombstones[k] = now
			return []connKey{k}
		}
	}
	if c.ip != "" && c.ip != s.IP {
		s.IP, s.Location = c.ip, nil
	}
	if s.Location == nil && s.IP != "" && p.locate != nil {
		s.Location = p.locate(s.IP)
	}
	p.gen++
	p.ver++
	p.conns[k] = sessionConn{id: c.id, gen: p.gen}
	if st := p.sessions[c.id]; st != nil {
		// A newer connection of an ONLINE session: it takes over (the
		// session stays ONLINE, no event); the older one is closed.
		older := st.conn
		delete(p.conns, older)
		s.Since = st.s.Since
		if s.App != st.s.App {
			p.countOnlineLocked(st.s.App, -1)
			p.countOnlineLocked(s.App, 1)
		}
		if a := addrKey(s.App, s.IP); a != st.addr {
			p.countAddrLocked(st.addr, -1)
			p.countAddrLocked(a, 1)
			st.addr = a
		}
		st.s, st.conn = s, k
		if older == k {
			return nil
		}
		return []connKey{older}
	}
	s.Since = now.UTC()
	st := &sessionState{s: s, conn: k, addr: addrKey(s.App, s.IP)}
	p.sessions[c.id] = st
	p.countOnlineLocked(s.App, 1)
	p.countAddrLocked(st.addr, 1)
	p.emitLocked(fleet.EventJoined, s, "")
	return nil
}

func (p *sessionPresence) countOnlineLocked(app string, d int) {
	app = strings.ToLower(app)
	if p.online[app] += d; p.online[app] <= 0 {
		delete(p.online, app)
	}
}

// disconnected removes connection k; a session's last one emits left.
func (p *sessionPresence) disconnected(k connKey, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tombstones[k] = p.now()
	p.removeLocked(k, reason)
}

func (p *sessionPresence) removeLocked(k connKey, reason string) {
	c, ok := p.conns[k]
	if !ok {
		return
	}
	delete(p.conns, k)
	p.ver++
	st := p.sessions[c.id]
	if st == nil || st.conn != k {
		return
	}
	delete(p.sessions, c.id)
	p.countOnlineLocked(st.s.App, -1)
	p.countAddrLocked(st.addr, -1)
	p.emitLocked(fleet.EventLeft, st.s, reason)
}

func (p *sessionPresence) emitLocked(event string, s fleet.Session, reason string) {
	p.seq++
	p.ver++
	if p.emit != nil {
		p.emit(fleet.SessionEvent{Event: event, Session: s, Time: p.now().UTC(), Seq: p.seq, Epoch: p.epoch, Reason: reason})
	}
}

// serverGone drops every session connection of a broker that shut down.
func (p *sessionPresence) serverGone(server string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.conns {
		if k.server == server {
			p.removeLocked(k, "broker "+server+" shut down")
		}
	}
}

// closeApp closes every connection of app's sessions (apps.rm): they
// leave at once, and the disconnect events that follow find nothing. It
// returns how many sessions were ONLINE.
func (p *sessionPresence) closeApp(ctx context.Context, app string) int {
	p.mu.Lock()
	var conns []connKey
	now := p.now()
	for _, st := range p.sessions {
		if !strings.EqualFold(st.s.App, app) {
			continue
		}
		conns = append(conns, st.conn)
		p.tombstones[st.conn] = now
		p.removeLocked(st.conn, "app "+app+" was removed")
	}
	for id, e := range p.pending {
		if strings.EqualFold(e.s.App, app) {
			p.dropPendingLocked(id)
		}
	}
	p.mu.Unlock()
	if p.kick != nil && len(conns) > 0 {
		p.kick(ctx, conns)
	}
	return len(conns)
}

// closeSession closes session id's connection (the call watcher found
// it flooding): it leaves at once, as in closeApp, and the kick runs on a
// goroutine of its own. False: id is not ONLINE.
func (p *sessionPresence) closeSession(id, reason string) (fleet.Session, bool) {
	if p == nil {
		return fleet.Session{}, false
	}
	p.mu.Lock()
	st := p.sessions[id]
	if st == nil {
		p.mu.Unlock()
		return fleet.Session{}, false
	}
	s, conn := st.s, st.conn
	p.tombstones[conn] = p.now()
	p.removeLocked(conn, reason)
	p.mu.Unlock()
	if p.kick != nil {
		go p.kick(context.Background(), []connKey{conn})
	}
	return s, true
}

// appOfSession is the app of ONLINE session id.
func (p *sessionPresence) appOfSession(id string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.sessions[id]; st != nil {
		return st.s.App, true
	}
	return "", false
}

// close closes connections (through kick).
func (p *sessionPresence) close(conns []connKey) {
	if p.kick != nil {
		p.kick(context.Background(), conns)
	}
}

// isOnline reports whether session id is ONLINE (the call watcher's
// question); a nil p has none.
func (p *sessionPresence) isOnline(id string) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sessions[id] != nil
}

// count is the number of sessions ONLINE.
func (p *sessionPresence) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sessions)
}

// generation marks the start of a resync (see presence.generation).
func (p *sessionPresence) generation() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen
}

// resync folds in the session connections of a CONNZ snapshot of the
// hub's brokers, as presence.resync does the machines': for every server
// that answered, its session connections become exactly the snapshot's
// (bar those added since gen, or closed by a disconnect event trusted
// over it); a server alive but silent keeps what is known; any other
// server is gone. It returns connections to close (superseded, or of a
// removed app).
func (p *sessionPresence) resync(gen uint64, snap map[string]map[uint64]sessionConnInfo, alive map[string]bool, taken time.Time) []connKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range goneInResync(p.conns, func(c sessionConn) uint64 { return c.gen }, nil, gen, snap, alive) {
		p.removeLocked(g.k, g.reason)
	}
	now := p.now()
	var closeConns []connKey
	// In cid order per server: of two connections of one session, the
	// later (newer) one wins.
	servers := make([]string, 0, len(snap))
	for server := range snap {
		servers = append(servers, server)
	}
	sort.Strings(servers)
	for _, server := range servers {
		conns := snap[server]
		cids := make([]uint64, 0, len(conns))
		for cid := range conns {
			cids = append(cids, cid)
		}
		sort.Slice(cids, func(i, j int) bool { return cids[i] < cids[j] })
		for _, cid := range cids {
			k := connKey{server, cid}
			if t, dead := p.tombstones[k]; dead && !taken.IsZero() && t.Before(taken.Add(-tombstoneTrust)) {
				delete(p.tombstones, k)
			}
			if st := p.sessions[conns[cid].id]; st != nil {
				if st.conn != k {
					// Two connections of one session, the one
					// presence holds known from its events: it stays,
					// the other is closed.
					closeConns = append(closeConns, k)
				}
				continue
			}
			if sc, held := p.conns[k]; held && sc.id != conns[cid].id {
				p.removeLocked(k, "connection reused (found by resync)")
			}
			closeConns = append(closeConns, p.addLocked(k, conns[cid], now)...)
		}
	}
	cutoff := now.Add(-2 * time.Minute)
	for k, t := range p.tombstones {
		if t.Before(cutoff) {
			delete(p.tombstones, k)
		}
	}
	return closeConns
}

// missingFrom lists the session connections, known since before gen, of
// servers that answered in snap but that snap does not list: the ones
// resync would drop (see presenceTracker.confirmMissing).
func (p *sessionPresence) missingFrom(gen uint64, snap map[string]map[uint64]sessionConnInfo) map[connKey]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[connKey]string{}
	for k, c := range p.conns {
		if c.gen > gen {
			continue
		}
		if conns, answered := snap[k.server]; answered {
			if _, listed := conns[k.cid]; !listed {
				out[k] = c.id
			}
		}
	}
	return out
}

// snapshot returns the ONLINE sessions sorted by id, the seq of the last
// event folded in, and the version (it changes whenever they do).
func (p *sessionPresence) snapshot() (sessions []fleet.Session, seq uint64, epoch string, ver uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]fleet.Session, 0, len(p.sessions))
	for _, st := range p.sessions {
		out = append(out, st.s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, p.seq, p.epoch, p.ver
}

// version changes whenever anything snapshot returns changes.
func (p *sessionPresence) version() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ver
}
