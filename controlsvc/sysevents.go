package controlsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// System subjects the control service uses on its SYS connection.
var (
	connectSubject    = fleet.AccountConnectSubject(broker.FleetAccount)
	disconnectSubject = fleet.AccountDisconnectSubject(broker.FleetAccount)
	shutdownSubject   = fleet.ServerShutdownWildcard
	serverPingSubject = fleet.ServerPingSubject
)

// connEvent is the part of the broker's connect/disconnect event we read.
type connEvent struct {
	Server struct {
		ID string `json:"id"`
	} `json:"server"`
	Client struct {
		ID   uint64 `json:"id"`
		User string `json:"user"`
		Name string `json:"name"`
		Host string `json:"host"`
		// Tags are the issued JWT's tags: an agent's carry its key.
		Tags []string `json:"tags"`
	} `json:"client"`
	Reason string `json:"reason"`
}

// watchEvents feeds the broker's events to presence, in the order they
// arrive: the hub's on one goroutine, each remote site's on one of its
// own, so a connect is never handled after its own disconnect and a site
// that floods events does not hold up the hub's (see sitework.go). A
// site's events pass its rate first (admitSiteEvent); the hub's have none.
func (s *Service) watchEvents(ctx context.Context, nc *nats.Conn) (func(), error) {
	s.startWatchingSites()
	var subs []*nats.Subscription
	quit := make(chan struct{})
	var loops sync.WaitGroup
	stop := func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
		close(quit)
		loops.Wait()
	}
	loop := func(site string, ch chan *nats.Msg, siteSubs []*nats.Subscription) {
		loops.Go(func() {
			reported := 0
			for {
				select {
				case <-ctx.Done():
					return
				case <-quit:
					return
				case m := <-ch:
					if site == "" || s.admitSiteEvent(ctx, site) {
						s.handleEvent(m)
					}
					if site != "" && len(ch) == 0 {
						reported = s.reportDroppedEvents(ctx, site, siteSubs, reported)
					}
				}
			}
		})
	}
	subscribe := func(ch chan *nats.Msg, subjects ...string) ([]*nats.Subscription, error) {
		var out []*nats.Subscription
		for _, subj := range subjects {
			sub, err := nc.ChanSubscribe(subj, ch)
			if err != nil {
				return nil, fmt.Errorf("subscribe %s: %w", subj, err)
			}
			out = append(out, sub)
			subs = append(subs, sub)
		}
		return out, nil
	}
	hub := make(chan *nats.Msg, 1<<16)
	if _, err := subscribe(hub, connectSubject, disconnectSubject, shutdownSubject); err != nil {
		stop()
		return nil, err
	}
	loop("", hub, nil)
	// Remote sites' events arrive renamed under their site (see
	// broker/leaf.go): the subject, not the event, says where from. A
	// site's queue is bounded: past it the client drops them (counted by
	// its subscriptions, reported by reportDroppedEvents).
	for _, site := range s.cfg.LeafSites {
		ch := make(chan *nats.Msg, siteEventQueue)
		siteSubs, err := subscribe(ch, fleet.SiteSysSubject(site.Name, connectSubject),
			fleet.SiteSysSubject(site.Name, disconnectSubject), fleet.SiteSysSubject(site.Name, shutdownSubject))
		if err != nil {
			stop()
			return nil, err
		}
		loop(site.Name, ch, siteSubs)
	}
	return stop, nil
}

// reportDroppedEvents logs (rate-limited) the events of site its
// subscriptions dropped since reported of them were, and schedules a
// resync of the site; it returns how many have been now.
func (s *Service) reportDroppedEvents(ctx context.Context, site string, subs []*nats.Subscription, reported int) int {
	n := 0
	for _, sub := range subs {
		d, _ := sub.Dropped()
		n += d
	}
	if n > reported {
		s.scheduleSiteResync(ctx, site)
		s.siteWarn(site, "events", fmt.Sprintf("a site sent more events than its queue holds (%d); the rest were dropped, and its presence is resynced shortly", siteEventQueue),
			append([]any{"dropped_total", n}, s.siteStaleArgs(site)...)...)
	}
	return n
}

func (s *Service) handleEvent(m *nats.Msg) {
	site, subject := "", m.Subject
	if !fleet.IsSysSubject(subject) {
		var err error
		if site, subject, err = fleet.ParseSiteSysSubject(subject); err != nil {
			s.log.Error("malformed site event", "error", err)
			return
		}
	}
	if strings.HasSuffix(subject, ".SHUTDOWN") {
		if ev, err := fleet.ParseServerEvent(subject); err == nil && ev.Kind == fleet.SysShutdown {
			s.log.Info("broker shut down", "site", site, "server", ev.Server)
			s.presence.serverGone(siteServer(site, ev.Server))
		}
		return
	}
	var ev connEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		s.log.Error("malformed broker event", "subject", m.Subject, "error", err)
		return
	}
	// A site's events name servers of that site only, whatever id they
	// carry: a site cannot speak for the hub's brokers or another site's.
	ev.Server.ID = siteServer(site, ev.Server.ID)
	k := connKey{ev.Server.ID, ev.Client.ID}
	if subject == connectSubject {
		s.admitMu.Lock()
		ok := s.onRecord(ev.Client.User, ev.Client.Tags, site)
		var older []connKey
		if id, agent := strings.CutPrefix(ev.Client.User, agentUserPrefix); agent && ok {
			s.limit.connected(id)
		}
		if ok {
			older = s.olderAgentConns(k, ev.Client.User)
			s.presence.connected(k, ev.Client.User)
			if site != "" {
				s.presence.superseded(older)
			}
		}
		s.admitMu.Unlock()
		if len(older) > 0 && site != "" {
			s.siteJob(site, "closing a machine's older connection", func() { s.supersede(ev, older) })
		} else if len(older) > 0 {
			go s.supersede(ev, older)
		}
		_, agent := strings.CutPrefix(ev.Client.User, agentUserPrefix)
		if !ok && site != "" && agent {
			// The callout admits at a site only that site's machines:
			// a site's claim about any other machine is not believed.
			s.siteWarn(site, "claims", "site claimed a connection of a machine that is not one of its own; ignored, and closed at the site",
				"user", ev.Client.User, "name", ev.Client.Name, "host", ev.Client.Host)
			s.siteJob(site, "a claimed connection", func() {
				if err := s.kickOne(context.Background(), k); err != nil {
					s.log.Debug("closing a site's claimed connection failed", "site", site, "server", k.server, "cid", k.cid, "error", err)
				}
			})
		} else if !ok && site != "" {
			// The site's own leaf link and the like: nothing presence
			// tracks at a site.
			s.log.Debug("site connection that is not a machine; ignored", "site", site, "user", ev.Client.User)
		} else if !ok {
			// Authorised, then removed before this event arrived: the
			// removal's kick could not see the connection yet. It never
			// shows as ONLINE and is closed now.
			s.log.Warn("closing a connection whose identity was removed after it was authorised",
				"user", ev.Client.User, "name", ev.Client.Name, "host", ev.Client.Host)
			go s.kick(context.Background(), []connKey{k})
		}
	} else {
		s.presence.disconnected(k, ev.Reason)
	}
}

// siteServer names server id of remote site ("": the hub) in presence:
// "<site>/<id>" (server ids never hold a '/').
func siteServer(site, id string) string {
	if site == "" {
		return id
	}
	return site + "/" + id
}

// serverSite returns the remote site of a server as siteServer names it
// ("" for the hub's), and its id.
func serverSite(server string) (site, id string) {
	if site, id, ok := strings.Cut(server, "/"); ok {
		return site, id
	}
	return "", server
}

// serverRequest is the subject of system request verb (CONNZ, KICK) to
// server, as siteServer names it: a site's brokers are reached through
// the site's own account at the hub only.
func serverRequest(server, verb string) string {
	site, id := serverSite(server)
	subj := fleet.ServerRequestSubject(id, verb)
	if site == "" {
		return subj
	}
	return fleet.SiteSysSubject(site, subj)
}

// olderAgentConns returns the other connections presence holds for an
// agent user: one machine is served by one connection, the newest (see
// supersede). Operators may hold several.
func (s *Service) olderAgentConns(k connKey, user string) []connKey {
	if !strings.HasPrefix(user, agentUserPrefix) {
		return nil
	}
	var out []connKey
	for _, c := range s.presence.connsOf(user) {
		if c != k {
			out = append(out, c)
		}
	}
	return out
}

// supersede closes a machine's older connections when a newer one
// arrives: two agents with the same id and key would otherwise both
// answer every call and race. The newest wins because a machine that
// reconnects (its old connection half-open, or moved to another broker)
// is the newest, and the old one is dead anyway. A connection that was
// really open and is closed is logged and audited as refused; one already
// gone (its broker died) is not. A second agent sharing the id and key
// reconnects in turn and closes the first: each round is recorded, so the
// duplicate shows in the log and the audit until one of them is stopped
// or the machine re-keyed.
func (s *Service) supersede(ev connEvent, older []connKey) {
	id := strings.TrimPrefix(ev.Client.User, agentUserPrefix)
	for _, k := range older {
		if err := s.kickOne(context.Background(), k); err != nil {
			s.log.Debug("older connection of a machine already gone", "machine", id, "server", k.server, "cid", k.cid, "error", err)
			continue
		}
		reason := fmt.Sprintf("machine %s connected again from %s (connection %d on %s), so its older connection %d on %s was closed: "+
			"one machine is served by its newest connection. If this repeats, two agents run with the same id and key: "+
			"stop one, or give it its own key and id", id, ev.Client.Host, ev.Client.ID, ev.Server.ID, k.cid, k.server)
		s.log.Warn("closed a machine's older connection", "machine", id, "server", k.server, "cid", k.cid,
			"new_host", ev.Client.Host, "new_cid", ev.Client.ID)
		s.auditRefused("agent", id, "", ev.Client.Host, reason)
	}
}

// onRecord reports whether the identity behind a FLEET user name (as the
// callout named it) is still in the registry and, for a machine whose JWT
// tags name the key it connected with, whether that key is still the one
// on record: a connection made with a key that was since replaced is not
// admitted.
//
// A connection at remote site (site != "") is on record only if it is a
// machine registered to that site; one at the hub, only if it is not a
// site's machine.
func (s *Service) onRecord(user string, tags []string, site string) bool {
	if user == staleUser {
		return false
	}
	if id, ok := strings.CutPrefix(user, agentUserPrefix); ok {
		m, ok := s.reg.Machine(id)
		return ok && m.Site == site && keyTagMatches(tags, m.Key)
	}
	if site != "" {
		return false
	}
	if name, ok := strings.CutPrefix(user, operatorUserPrefix); ok {
		_, ok := s.reg.Operator(name)
		return ok
	}
	return true
}

type serverAPIResponse struct {
	Server struct {
		ID string `json:"id"`
	} `json:"server"`
	Data  json.RawMessage `json:"data"`
	Error *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error"`
}

type connzData struct {
	Total int `json:"total"`
	Conns []struct {
		Cid  uint64   `json:"cid"`
		User string   `json:"authorized_user"`
		Tags []string `json:"tags"`
	} `json:"connections"`
}

// resync asks every broker for its FLEET connections and folds the answer
// into presence. It is run at start (after the event subscription, so
// nothing falls between), after a reconnect, and periodically.
//
// The hub's brokers and each remote site are asked in parallel, and each
// part is folded on its own: a site has siteResyncWait and the bounds of
// resyncSite, and a site past them keeps what is known of it while the
// hub's part (and the other sites') go on. resync returns when every part
// is done or out of time.
func (s *Service) resync(ctx context.Context) error { return s.resyncParts(ctx, true) }

// resyncParts is resync; with waitSites false it returns once the hub's
// part is folded, the sites' parts going on (under their deadline) on
// their own: the service's start does not wait on remote sites.
func (s *Service) resyncParts(ctx context.Context, waitSites bool) error {
	gen, taken, links := s.presence.generation(), s.presence.now(), s.links.mark()
	var wg sync.WaitGroup
	for _, site := range s.cfg.LeafSites {
		if !s.startSiteResync(site.Name) {
			s.siteWarn(site.Name, "resync", "the previous presence resync of a site is still running; keeping what is known of it")
			continue
		}
		wg.Go(func() {
			defer s.endSiteResync(site.Name)
			s.resyncSitePart(ctx, site.Name, gen, taken)
		})
	}
	err := s.resyncHub(ctx, gen, taken, links)
	if waitSites {
		wg.Wait()
	}
	return err
}

// resyncHub is the hub's brokers' part of resync.
func (s *Service) resyncHub(ctx context.Context, gen uint64, taken time.Time, links uint64) error {
	servers, err := s.pingAt(ctx, serverPingSubject, maxHubServers)
	if err != nil {
		s.log.Warn("server ping", "error", err)
	}
	if len(servers) == 0 {
		return fmt.Errorf("no broker answered %s", serverPingSubject)
	}
	snap := map[string]map[uint64]string{}
	alive := map[string]bool{}
	for _, id := range servers {
		alive[id] = true
		conns, err := s.serverConnz(ctx, id, nil)
		if err != nil {
			s.log.Warn("CONNZ failed; keeping what is known of that broker", "server", id, "error", err)
			continue
		}
		snap[id] = conns
	}
	if len(snap) == 0 {
		return fmt.Errorf("no broker answered CONNZ")
	}
	if len(s.cfg.LeafSites) > 0 {
		s.checkLinks(ctx, snap, links)
	}
	s.foldResync(ctx, "", gen, snap, alive, taken)
	return nil
}

// resyncSitePart is site's part of resync, under siteResyncWait.
func (s *Service) resyncSitePart(ctx context.Context, site string, gen uint64, taken time.Time) {
	sctx, cancel := context.WithTimeout(ctx, siteResyncWait)
	defer cancel()
	s.resyncSite(sctx, site, gen, taken)
}

// resyncSite is site's part of resync, under ctx's deadline. Its brokers
// are asked through the site's own account; what they say is believed
// only within bounds: at most maxSiteServers brokers, and at most two
// connections per machine registered to the site plus siteConnSlack in
// all. A site past a bound or the deadline keeps what is known of it (its
// machines stay as they are) and is logged; a site no broker of which
// answers the ping is gone (its link is down) as before. A part that
// folds is the site's last good resync (siteResynced): what a site shows
// is as old as that (siteResyncAge, cc_site_resync_age_seconds).
func (s *Service) resyncSite(ctx context.Context, site string, gen uint64, taken time.Time) {
	keep := func(why string, args ...any) {
		s.siteWarn(site, "resync", "presence resync of a site "+why+"; keeping what is known of its machines, "+
			"and taking it up again at the next resync. If this repeats, check the site's brokers (a broker that is not the site's may hold its secret)",
			append(args, s.siteStaleArgs(site)...)...)
	}
	servers, err := s.pingAt(ctx, fleet.SiteSysSubject(site, serverPingSubject), maxSiteServers)
	if err != nil {
		keep("stopped", "error", err)
		return
	}
	if ctx.Err() != nil {
		keep("ran out of time", "wait", siteResyncWait)
		return
	}
	budget := 2*len(s.reg.SiteMachines(site)) + siteConnSlack
	snap := map[string]map[uint64]string{}
	alive := map[string]bool{}
	for _, id := range servers {
		server := siteServer(site, id)
		alive[server] = true
		conns, err := s.serverConnz(ctx, server, &budget)
		switch {
		case errors.Is(err, errTooManyConns):
			keep("stopped: its brokers listed more connections than it may have", "server", server,
				"limit", 2*len(s.reg.SiteMachines(site))+siteConnSlack)
			return
		case ctx.Err() != nil:
			keep("ran out of time", "wait", siteResyncWait, "server", server)
			return
		case err != nil:
			s.siteWarn(site, "connz", "CONNZ failed; keeping what is known of that broker", "server", server, "error", err)
			continue
		}
		snap[server] = conns
	}
	s.foldResync(ctx, site, gen, snap, alive, taken)
	s.siteResynced(site, taken)
}

// foldResync folds one part of a resync (the hub's brokers, site "", or
// one site's) into presence: only connections of that part's brokers
// change.
func (s *Service) foldResync(ctx context.Context, site string, gen uint64, snap map[string]map[uint64]string, alive map[string]bool, taken time.Time) {
	s.confirmMissing(ctx, gen, snap)
	inPart := func(server string) bool { st, _ := serverSite(server); return st == site }
	// A connection whose identity is no longer on record (its connect
	// event lost, or the kick failed) is not put back; it is closed.
	var stale []connKey
	s.admitMu.Lock()
	for server, conns := range snap {
		for cid, user := range conns {
			if !s.onRecord(user, nil, site) {
				delete(conns, cid)
				if _, agent := strings.CutPrefix(user, agentUserPrefix); agent || site == "" {
					stale = append(stale, connKey{server, cid})
				}
			}
		}
	}
	s.presence.resyncIn(inPart, gen, snap, alive, taken)
	s.admitMu.Unlock()
	s.presence.settleKnownIf(func(id string) bool { return s.resyncPartOf(id) == site })
	if len(stale) == 0 {
		return
	}
	if site == "" {
		s.log.Warn("closing connections whose identity was removed", "connections", len(stale))
		go s.kick(context.Background(), stale)
		return
	}
	s.siteWarn(site, "stale", "closing connections at a site whose machine is not one of the site's", "connections", len(stale))
	for _, k := range stale {
		if !s.siteJob(site, "a stale connection", func() { _ = s.kickOne(context.Background(), k) }) {
			break
		}
	}
}

// removeIdentity runs remove (taking user's identity off the registry)
// and returns user's connections, with no connect event admitted between
// the two.
func (s *Service) removeIdentity(user string, remove func() error) ([]connKey, error) {
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	if err := remove(); err != nil {
		return nil, err
	}
	return s.presence.connsOf(user), nil
}

// maxConfirm bounds the connections one resync checks one by one.
const maxConfirm = 1000

// confirmMissing asks the broker about each connection presence holds
// that the CONNZ pages did not list, before the resync drops it. CONNZ
// pages by offset: when connections close between two page requests the
// later pages shift and skip live connections, and a broker with more
// than one page of agents churning (a reconnect storm) would have machines
// that are connected shown as gone. A connection the broker still has is
// put back into snap; past maxConfirm the rest are kept as they are.
func (s *Service) confirmMissing(ctx context.Context, gen uint64, snap map[string]map[uint64]string) {
	missing := s.presence.missingFrom(gen, snap)
	for i, k := range missing {
		if i >= maxConfirm {
			for _, k := range missing[i:] {
				snap[k.server][k.cid] = keepUser
			}
			s.log.Warn("presence resync: too many connections to confirm one by one; kept the rest as they were", "unconfirmed", len(missing)-i)
			return
		}
		req, _ := json.Marshal(map[string]any{"acc": broker.FleetAccount, "auth": true, "cid": k.cid})
		m, err := s.sys.RequestWithContext(withTimeout(ctx, 2*time.Second), serverRequest(k.server, "CONNZ"), req)
		if err != nil {
			snap[k.server][k.cid] = keepUser // cannot tell: keep it
			continue
		}
		var r serverAPIResponse
		var c connzData
		if json.Unmarshal(m.Data, &r) != nil || r.Error != nil || json.Unmarshal(r.Data, &c) != nil {
			snap[k.server][k.cid] = keepUser
			continue
		}
		for _, cn := range c.Conns {
			if cn.Cid == k.cid {
				snap[k.server][k.cid] = s.connUser(cn.User, cn.Tags)
			}
		}
	}
}

// keepUser marks a connection in a CONNZ snapshot that could not be
// confirmed either way: presence keeps it as it is.
const keepUser = "\x00keep"

// maxHubServers bounds the hub's brokers one ping collects.
const maxHubServers = 1024

// Ping waits: for the first answer, after each answer for the next, and
// in all (a hard deadline, however many answers keep coming).
const (
	pingFirstWait = 2 * time.Second
	pingNextWait  = 300 * time.Millisecond
	pingMaxWait   = 3 * time.Second
)

// resyncPartOf names the part of a resync that covers machine id: its
// site's, or the hub's ("") for a machine of the hub, one no longer
// registered, or one of a site this service does not link.
func (s *Service) resyncPartOf(id string) string {
	m, ok := s.reg.Machine(id)
	if !ok || m.Site == "" {
		return ""
	}
	for _, site := range s.cfg.LeafSites {
		if site.Name == m.Site {
			return m.Site
		}
	}
	return ""
}

// pingAt collects the (distinct) server ids that answer a ping on subject
// within pingMaxWait; more than max of them is an error.
func (s *Service) pingAt(ctx context.Context, subject string, max int) ([]string, error) {
	inbox := s.sys.NewRespInbox()
	sub, err := s.sys.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := s.sys.PublishRequest(subject, inbox, nil); err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, pingMaxWait)
	defer cancel()
	var ids []string
	seen := map[string]bool{}
	wait := pingFirstWait
	for {
		wctx, wcancel := context.WithTimeout(pctx, wait)
		m, err := sub.NextMsgWithContext(wctx)
		wcancel()
		if err != nil {
			return ids, nil
		}
		var r serverAPIResponse
		if json.Unmarshal(m.Data, &r) == nil && r.Server.ID != "" && !strings.Contains(r.Server.ID, "/") && !seen[r.Server.ID] {
			if len(ids) == max {
				return ids, fmt.Errorf("more than %d servers answered %s", max, subject)
			}
			seen[r.Server.ID] = true
			ids = append(ids, r.Server.ID)
		}
		wait = pingNextWait
	}
}

// errTooManyConns is serverConnz's answer past its budget.
var errTooManyConns = errors.New("more connections listed than allowed")

// serverConnz pages through one broker's FLEET connections. With budget
// (not nil) it takes at most *budget of them, and takes what it took off
// *budget: past it, errTooManyConns.
func (s *Service) serverConnz(ctx context.Context, server string, budget *int) (map[uint64]string, error) {
	out := map[uint64]string{}
	const page = 5000
	for offset := 0; ; {
		limit := page
		if budget != nil {
			// One more than the budget: a full page past it is known.
			limit = min(page, *budget+1)
		}
		req, _ := json.Marshal(map[string]any{"acc": broker.FleetAccount, "auth": true, "offset": offset, "limit": limit})
		m, err := s.sys.RequestWithContext(withTimeout(ctx, 5*time.Second), serverRequest(server, "CONNZ"), req)
		if err != nil {
			return nil, err
		}
		var r serverAPIResponse
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return nil, err
		}
		if r.Error != nil {
			return nil, fmt.Errorf("CONNZ: %d %s", r.Error.Code, r.Error.Description)
		}
		var c connzData
		if err := json.Unmarshal(r.Data, &c); err != nil {
			return nil, err
		}
		if budget != nil {
			if *budget -= len(c.Conns); *budget < 0 {
				return nil, errTooManyConns
			}
		}
		for _, cn := range c.Conns {
			out[cn.Cid] = s.connUser(cn.User, cn.Tags)
		}
		if len(c.Conns) < limit {
			return out, nil
		}
		offset += limit
	}
}

// kick tells the brokers to close the connections now.
func (s *Service) kick(ctx context.Context, conns []connKey) int {
	n := 0
	for _, k := range conns {
		if err := s.kickOne(ctx, k); err != nil {
			s.log.Error("closing connection failed", "server", k.server, "cid", k.cid, "error", err)
			continue
		}
		n++
	}
	return n
}

// kickOne tells connection k's broker to close it.
func (s *Service) kickOne(ctx context.Context, k connKey) error {
	req, _ := json.Marshal(map[string]uint64{"cid": k.cid})
	m, err := s.sys.RequestWithContext(withTimeout(ctx, 2*time.Second), serverRequest(k.server, "KICK"), req)
	if err != nil {
		return err
	}
	var r serverAPIResponse
	if json.Unmarshal(m.Data, &r) == nil && r.Error != nil {
		return errors.New(r.Error.Description)
	}
	return nil
}

func withTimeout(ctx context.Context, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(ctx, d)
	go func() { <-c.Done(); cancel() }()
	return c
}
