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
)

// resyncLoop resyncs every resyncInterval, and at once when asked
// (resyncSoon), until ctx ends; presence is saved after each.
func (tr *presenceTracker) resyncLoop(ctx context.Context) {
	t := time.NewTicker(tr.resyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-tr.resyncNow:
		}
		// Sites' parts go on in the background (one at a time per site):
		// a slow site does not hold up the hub's next resync.
		if err := tr.resyncParts(ctx, false); err != nil && ctx.Err() == nil {
			tr.log.Warn("presence resync failed", "error", err)
		}
		tr.savePresence()
	}
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
func (tr *presenceTracker) resync(ctx context.Context) error { return tr.resyncParts(ctx, true) }

// resyncParts is resync; with waitSites false it returns once the hub's
// part is folded, the sites' parts going on (under their deadline) on
// their own: the service's start does not wait on remote sites.
func (tr *presenceTracker) resyncParts(ctx context.Context, waitSites bool) error {
	gen, taken := tr.state.generation(), tr.state.now()
	var links uint64
	if tr.markLinks != nil {
		links = tr.markLinks()
	}
	var wg sync.WaitGroup
	for _, site := range tr.leafSites {
		if !tr.startSiteResync(site.Name) {
			tr.siteWarn(site.Name, "resync", "the previous presence resync of a site is still running; keeping what is known of it")
			continue
		}
		wg.Go(func() {
			defer tr.endSiteResync(site.Name)
			tr.resyncSitePart(ctx, site.Name, gen, taken)
		})
	}
	err := tr.resyncHub(ctx, gen, taken, links)
	if waitSites {
		wg.Wait()
	}
	return err
}

// resyncHub is the hub's brokers' part of resync.
func (tr *presenceTracker) resyncHub(ctx context.Context, gen uint64, taken time.Time, links uint64) error {
	var sgen uint64
	if tr.sessions != nil {
		sgen = tr.sessions.generation()
	}
	servers, err := tr.pingAt(ctx, serverPingSubject, maxHubServers)
	if err != nil {
		tr.log.Warn("server ping", "error", err)
	}
	if len(servers) == 0 {
		return fmt.Errorf("no broker answered %s", serverPingSubject)
	}
	snap := map[string]map[uint64]string{}
	// Sessions' connections go to the sessions' resync, the others'
	// addresses to noteIP.
	sessSnap := map[string]map[uint64]sessionConnInfo{}
	ips := map[connKey]string{}
	facts := map[connKey]*fleet.Facts{}
	alive := map[string]bool{}
	for _, id := range servers {
		alive[id] = true
		info, err := tr.serverConnzInfo(ctx, id, nil)
		if err != nil {
			tr.log.Warn("CONNZ failed; keeping what is known of that broker", "server", id, "error", err)
			continue
		}
		conns, sess := make(map[uint64]string, len(info)), map[uint64]sessionConnInfo{}
		for cid, c := range info {
			if sid, ok := strings.CutPrefix(c.user, sessionUserPrefix); ok {
				if fleet.ValidateSessionID(sid) == nil {
					sess[cid] = sessionConnInfo{id: sid, ip: c.ip, tags: c.tags}
				}
				continue
			}
			conns[cid] = c.user
			if f := agentFacts(c.user, c.name); f != nil {
				facts[connKey{id, cid}] = f
			}
			if c.ip != "" {
				ips[connKey{id, cid}] = c.ip
			}
		}
		snap[id], sessSnap[id] = conns, sess
	}
	if len(snap) == 0 {
		return fmt.Errorf("no broker answered CONNZ")
	}
	if len(tr.leafSites) > 0 && tr.checkLinks != nil {
		tr.checkLinks(ctx, snap, links)
	}
	tr.foldResync(ctx, "", gen, snap, alive, taken, facts)
	for k, ip := range ips {
		tr.noteIP(k, ip)
	}
	if tr.sessions != nil {
		tr.confirmMissingSessions(ctx, sgen, sessSnap)
		if closeConns := tr.sessions.resync(sgen, sessSnap, alive, taken); len(closeConns) > 0 {
			tr.log.Warn("closing session connections found by resync: a second connection of a session, or of a removed app", "connections", len(closeConns))
			go tr.sessions.close(closeConns)
		}
	}
	return nil
}

// resyncSitePart is site's part of resync, under siteResyncWait.
func (tr *presenceTracker) resyncSitePart(ctx context.Context, site string, gen uint64, taken time.Time) {
	sctx, cancel := context.WithTimeout(ctx, siteResyncWait)
	defer cancel()
	tr.resyncSite(sctx, site, gen, taken)
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
func (tr *presenceTracker) resyncSite(ctx context.Context, site string, gen uint64, taken time.Time) {
	keep := func(why string, args ...any) {
		tr.siteWarn(site, "resync", "presence resync of a site "+why+"; keeping what is known of its machines, "+
			"and taking it up again at the next resync. If this repeats, check the site's brokers (a broker that is not the site's may hold its secret)",
			append(args, tr.siteStaleArgs(site)...)...)
	}
	servers, err := tr.pingAt(ctx, fleet.SiteSysSubject(site, serverPingSubject), maxSiteServers)
	if err != nil {
		keep("stopped", "error", err)
		return
	}
	if ctx.Err() != nil {
		keep("ran out of time", "wait", siteResyncWait)
		return
	}
	budget := 2*len(tr.reg.SiteMachines(site)) + siteConnSlack
	snap := map[string]map[uint64]string{}
	facts := map[connKey]*fleet.Facts{}
	alive := map[string]bool{}
	for _, id := range servers {
		server := siteServer(site, id)
		alive[server] = true
		info, err := tr.serverConnzInfo(ctx, server, &budget)
		switch {
		case errors.Is(err, errTooManyConns):
			keep("stopped: its brokers listed more connections than it may have", "server", server,
				"limit", 2*len(tr.reg.SiteMachines(site))+siteConnSlack)
			return
		case ctx.Err() != nil:
			keep("ran out of time", "wait", siteResyncWait, "server", server)
			return
		case err != nil:
			tr.siteWarn(site, "connz", "CONNZ failed; keeping what is known of that broker", "server", server, "error", err)
			continue
		}
		conns := make(map[uint64]string, len(info))
		for cid, c := range info {
			conns[cid] = c.user
			// A site's names are believed about its own machines only
			// (foldResync drops the others' connections).
			if f := agentFacts(c.user, c.name); f != nil {
				facts[connKey{server, cid}] = f
			}
		}
		snap[server] = conns
	}
	tr.foldResync(ctx, site, gen, snap, alive, taken, facts)
	tr.siteResynced(site, taken)
}

// foldResync folds one part of a resync (the hub's brokers, site "", or
// one site's) into presence: only connections of that part's brokers
// change. facts are those CONNZ's connection names carried (nil: none).
func (tr *presenceTracker) foldResync(ctx context.Context, site string, gen uint64, snap map[string]map[uint64]string, alive map[string]bool, taken time.Time,
	facts map[connKey]*fleet.Facts) {
	tr.confirmMissing(ctx, gen, snap)
	inPart := func(server string) bool { st, _ := serverSite(server); return st == site }
	// A connection whose identity is no longer on record (its connect
	// event lost, or the kick failed) is not put back; it is closed.
	var stale []connKey
	tr.admitMu.Lock()
	for server, conns := range snap {
		for cid, user := range conns {
			if !tr.onRecord(user, nil, site) {
				delete(conns, cid)
				if _, agent := strings.CutPrefix(user, agentUserPrefix); agent || site == "" {
					stale = append(stale, connKey{server, cid})
				}
			}
		}
	}
	tr.state.resyncIn(inPart, gen, snap, alive, taken, facts)
	tr.admitMu.Unlock()
	tr.state.settleKnownIf(func(id string) bool { return tr.resyncPartOf(id) == site })
	if len(stale) == 0 {
		return
	}
	if site == "" {
		tr.log.Warn("closing connections whose identity was removed", "connections", len(stale))
		go tr.kick(context.Background(), stale)
		return
	}
	tr.siteWarn(site, "stale", "closing connections at a site whose machine is not one of the site's", "connections", len(stale))
	for _, k := range stale {
		if !tr.siteJob(site, "a stale connection", func() { _ = tr.kickOne(context.Background(), k) }) {
			break
		}
	}
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
func (tr *presenceTracker) confirmMissing(ctx context.Context, gen uint64, snap map[string]map[uint64]string) {
	missing := tr.state.missingFrom(gen, snap)
	for i, k := range missing {
		if i >= maxConfirm {
			for _, k := range missing[i:] {
				snap[k.server][k.cid] = keepUser
			}
			tr.log.Warn("presence resync: too many connections to confirm one by one; kept the rest as they were", "unconfirmed", len(missing)-i)
			return
		}
		req, _ := json.Marshal(map[string]any{"acc": broker.FleetAccount, "auth": true, "cid": k.cid})
		m, err := tr.sys.RequestWithContext(withTimeout(ctx, 2*time.Second), serverRequest(k.server, "CONNZ"), req)
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
				snap[k.server][k.cid] = connUser(tr.reg, cn.User, cn.Tags)
			}
		}
	}
}

// keepUser marks a connection in a CONNZ snapshot that could not be
// confirmed either way: presence keeps it as it is.
const keepUser = "\x00keep"

// resyncPartOf names the part of a resync that covers machine id: its
// site's, or the hub's ("") for a machine of the hub, one no longer
// registered, or one of a site this service does not link.
func (tr *presenceTracker) resyncPartOf(id string) string {
	m, ok := tr.reg.Machine(id)
	if !ok || m.Site == "" {
		return ""
	}
	for _, site := range tr.leafSites {
		if site.Name == m.Site {
			return m.Site
		}
	}
	return ""
}
