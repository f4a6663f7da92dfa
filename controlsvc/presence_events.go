package controlsvc

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// The brokers' events the tracker follows on its SYS connection.
var (
	connectSubject    = fleet.AccountConnectSubject(broker.FleetAccount)
	disconnectSubject = fleet.AccountDisconnectSubject(broker.FleetAccount)
	shutdownSubject   = fleet.ServerShutdownWildcard
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
		// Start is when the broker accepted the connection.
		Start time.Time `json:"start"`
	} `json:"client"`
	Reason string `json:"reason"`
}

// watchEvents feeds the broker's events to presence, in the order they
// arrive: the hub's on one goroutine, each remote site's on one of its
// own, so a connect is never handled after its own disconnect and a site
// that floods events does not hold up the hub's (see presence_sites.go). A
// site's events pass its rate first (admitSiteEvent); the hub's have none.
func (tr *presenceTracker) watchEvents(ctx context.Context, nc *nats.Conn) (func(), error) {
	tr.startWatchingSites()
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
					if site == "" || tr.admitSiteEvent(ctx, site) {
						tr.handleEvent(m)
					}
					if site != "" && len(ch) == 0 {
						reported = tr.reportDroppedEvents(ctx, site, siteSubs, reported)
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
	for _, site := range tr.leafSites {
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
func (tr *presenceTracker) reportDroppedEvents(ctx context.Context, site string, subs []*nats.Subscription, reported int) int {
	n := 0
	for _, sub := range subs {
		d, _ := sub.Dropped()
		n += d
	}
	if n > reported {
		tr.scheduleSiteResync(ctx, site)
		tr.siteWarn(site, "events", fmt.Sprintf("a site sent more events than its queue holds (%d); the rest were dropped, and its presence is resynced shortly", siteEventQueue),
			append([]any{"dropped_total", n}, tr.siteStaleArgs(site)...)...)
	}
	return n
}

func (tr *presenceTracker) handleEvent(m *nats.Msg) {
	site, subject := "", m.Subject
	if !fleet.IsSysSubject(subject) {
		var err error
		if site, subject, err = fleet.ParseSiteSysSubject(subject); err != nil {
			tr.log.Error("malformed site event", "error", err)
			return
		}
	}
	if strings.HasSuffix(subject, ".SHUTDOWN") {
		if ev, err := fleet.ParseServerEvent(subject); err == nil && ev.Kind == fleet.SysShutdown {
			tr.log.Info("broker shut down", "site", site, "server", ev.Server)
			tr.state.serverGone(siteServer(site, ev.Server))
			if tr.sessions != nil {
				tr.sessions.serverGone(siteServer(site, ev.Server))
			}
		}
		return
	}
	var ev connEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		tr.log.Error("malformed broker event", "subject", m.Subject, "error", err)
		return
	}
	// A site's events name servers of that site only, whatever id they
	// carry: a site cannot speak for the hub's brokers or another site's.
	ev.Server.ID = siteServer(site, ev.Server.ID)
	k := connKey{ev.Server.ID, ev.Client.ID}
	if strings.HasPrefix(ev.Client.User, sessionUserPrefix) {
		tr.handleSessionEvent(site, subject, ev, k)
		return
	}
	if subject == connectSubject {
		tr.admitMu.Lock()
		ok := tr.onRecord(ev.Client.User, ev.Client.Tags, site)
		var older []connKey
		var newer *connKey
		if id, agent := strings.CutPrefix(ev.Client.User, agentUserPrefix); agent && ok {
			tr.limit.connected(id)
		}
		if ok {
			older, newer = tr.otherAgentConns(k, ev.Client.Start, ev.Client.User)
			switch {
			case newer != nil && site != "":
				// Closed at once, never counted (see superseded).
			default:
				tr.state.connectedWith(k, ev.Client.User, ev.Client.Start, agentFacts(ev.Client.User, ev.Client.Name))
				tr.noteIP(k, ev.Client.Host)
				if site != "" {
					tr.state.superseded(older)
				}
			}
		}
		tr.admitMu.Unlock()
		if !tr.publishing() {
			// The presence publisher closes them, and audits it once
			// (leader.go); this replica drops them when their
			// disconnect events come.
			older, newer = nil, nil
		}
		if newer != nil && site != "" {
			tr.siteJob(site, "closing a machine's late older connection", func() { tr.closeLate(ev, k, *newer) })
		} else if newer != nil {
			go tr.closeLate(ev, k, *newer)
		} else if len(older) > 0 && site != "" {
			tr.siteJob(site, "closing a machine's older connection", func() { tr.supersede(ev, older) })
		} else if len(older) > 0 {
			go tr.supersede(ev, older)
		}
		_, agent := strings.CutPrefix(ev.Client.User, agentUserPrefix)
		if !ok && site != "" && agent {
			// The callout admits at a site only that site's machines:
			// a site's claim about any other machine is not believed.
			tr.siteWarn(site, "claims", "site claimed a connection of a machine that is not one of its own; ignored, and closed at the site",
				"user", ev.Client.User, "name", ev.Client.Name, "host", ev.Client.Host)
			tr.siteJob(site, "a claimed connection", func() {
				if err := tr.kickOne(context.Background(), k); err != nil {
					tr.log.Debug("closing a site's claimed connection failed", "site", site, "server", k.server, "cid", k.cid, "error", err)
				}
			})
		} else if !ok && site != "" {
			// The site's own leaf link and the like: nothing presence
			// tracks at a site.
			tr.log.Debug("site connection that is not a machine; ignored", "site", site, "user", ev.Client.User)
		} else if !ok {
			// Authorised, then removed before this event arrived: the
			// removal's kick could not see the connection yet. It never
			// shows as ONLINE and is closed now.
			tr.log.Warn("closing a connection whose identity was removed after it was authorised",
				"user", ev.Client.User, "name", ev.Client.Name, "host", ev.Client.Host)
			go tr.kick(context.Background(), []connKey{k})
		}
	} else {
		tr.state.disconnected(k, ev.Reason)
	}
}

// agentFacts are the facts in the connection name of user, an agent's
// (fleet.ParseFactsName); nil for anyone else, and for a name that names
// another machine than the user the callout issued: a machine describes
// itself only.
func agentFacts(user, name string) *fleet.Facts {
	id, ok := strings.CutPrefix(user, agentUserPrefix)
	if !ok {
		return nil
	}
	nameID, facts := fleet.ParseFactsName(name)
	if nameID != id {
		return nil
	}
	return facts
}

// otherAgentConns sorts the other connections presence holds for an
// agent user against k, accepted at start: one machine is served by one
// connection, the newest (see supersede). older are the ones k replaces;
// newer, if not nil, is one opened after k, which k must not replace.
// Operators may hold several connections: none for them.
//
// Connect events do not arrive in the order the connections were made.
// The callout answers the newest requests first, and nats.go leaves the
// socket of a reconnect attempt whose handshake timed out open, so the
// broker finishes authorising an attempt the agent gave up on after the
// agent's next attempt is connected: its connect event comes last. Taken
// as the newest, it closed the agent's live connection and kept the
// abandoned one (seen in a 10,000-agent reconnect storm).
func (tr *presenceTracker) otherAgentConns(k connKey, start time.Time, user string) (older []connKey, newer *connKey) {
	if !strings.HasPrefix(user, agentUserPrefix) {
		return nil, nil
	}
	for _, c := range tr.state.connsOf(user) {
		switch {
		case c == k:
		case newerConn(c, tr.state.startOf(c), k, start):
			newer = &c
		default:
			older = append(older, c)
		}
	}
	if newer != nil {
		return nil, newer
	}
	return older, nil
}

// closeLate closes connection k of a machine whose connect event came
// after that of newer, a connection opened after it: an attempt the agent
// abandoned that the broker authorised late. The machine stays ONLINE
// through newer; nothing is audited (the agent did nothing wrong).
func (tr *presenceTracker) closeLate(ev connEvent, k, newer connKey) {
	id := strings.TrimPrefix(ev.Client.User, agentUserPrefix)
	if err := tr.kickOne(context.Background(), k); err != nil {
		tr.log.Debug("late older connection of a machine already gone", "machine", id, "server", k.server, "cid", k.cid, "error", err)
		return
	}
	tr.log.Info("closed a machine's older connection that was authorised after its newer one (an abandoned connection attempt)",
		"machine", id, "server", k.server, "cid", k.cid, "newer_server", newer.server, "newer_cid", newer.cid)
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
//
// An agent whose facts changed opens a new connection to report them and
// closes the old one itself (agent/facts.go): an older connection from the
// same address with the same boot time and other facts is that, closed
// without a warning or an audit record (presence.go, factsRefresh). Two
// agents sharing a key on different hosts still are, behind one address
// too: their boot times differ.
func (tr *presenceTracker) supersede(ev connEvent, older []connKey) {
	id := strings.TrimPrefix(ev.Client.User, agentUserPrefix)
	facts := agentFacts(ev.Client.User, ev.Client.Name)
	for _, k := range older {
		refresh := tr.state.factsRefresh(k, ev.Client.Host, facts)
		if err := tr.kickOne(context.Background(), k); err != nil {
			tr.log.Debug("older connection of a machine already gone", "machine", id, "server", k.server, "cid", k.cid, "error", err)
			continue
		}
		if refresh {
			tr.log.Info("closed a machine's older connection: it reconnected to report new facts", "machine", id, "server", k.server, "cid", k.cid)
			continue
		}
		reason := fmt.Sprintf("machine %s connected again from %s (connection %d on %s), so its older connection %d on %s was closed: "+
			"one machine is served by its newest connection. If this repeats, two agents run with the same id and key: "+
			"stop one, or give it its own key and id", id, ev.Client.Host, ev.Client.ID, ev.Server.ID, k.cid, k.server)
		tr.log.Warn("closed a machine's older connection", "machine", id, "server", k.server, "cid", k.cid,
			"new_host", ev.Client.Host, "new_cid", ev.Client.ID)
		tr.audit("agent", id, "", ev.Client.Host, reason)
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
func (tr *presenceTracker) onRecord(user string, tags []string, site string) bool {
	if user == staleUser {
		return false
	}
	if id, ok := strings.CutPrefix(user, agentUserPrefix); ok {
		m, ok := tr.reg.Machine(id)
		return ok && m.Site == site && keyTagMatches(tags, m.Key)
	}
	if site != "" {
		return false
	}
	if name, ok := strings.CutPrefix(user, operatorUserPrefix); ok {
		_, ok := tr.reg.Operator(name)
		return ok
	}
	return true
}

func (tr *presenceTracker) publishEvent(ev fleet.PresenceEvent) {
	if !tr.publishing() {
		// Another replica publishes (leader.go).
		tr.log.Debug("presence (published by the presence publisher)", "event", ev.Event, "machine", ev.Machine, "reason", ev.Reason)
		return
	}
	tr.log.Info("presence", "event", ev.Event, "machine", ev.Machine, "reason", ev.Reason)
	b, _ := json.Marshal(ev)
	if tr.announce != nil && tr.announce.Publish(fleet.PresenceEventSubject(ev.Event, ev.Machine), b) == nil {
		tr.published.Add(1)
	}
	if tr.onEvent != nil {
		tr.onEvent(ev)
	}
}
