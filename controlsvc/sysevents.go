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
	connectSubject    = "$SYS.ACCOUNT." + broker.FleetAccount + ".CONNECT"
	disconnectSubject = "$SYS.ACCOUNT." + broker.FleetAccount + ".DISCONNECT"
	shutdownSubject   = "$SYS.SERVER.*.SHUTDOWN"
	serverPingSubject = "$SYS.REQ.SERVER.PING"
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
// arrive, on one goroutine so a connect is never handled after its own
// disconnect.
func (s *Service) watchEvents(ctx context.Context, nc *nats.Conn) (func(), error) {
	ch := make(chan *nats.Msg, 1<<16)
	var subs []*nats.Subscription
	// Remote sites' events arrive renamed under their site (see
	// broker/leaf.go): the subject, not the event, says where from.
	for _, subj := range []string{connectSubject, disconnectSubject, shutdownSubject,
		fleet.SiteSysWildcard(connectSubject), fleet.SiteSysWildcard(disconnectSubject), fleet.SiteSysWildcard(shutdownSubject)} {
		sub, err := nc.ChanSubscribe(subj, ch)
		if err != nil {
			return nil, fmt.Errorf("subscribe %s: %w", subj, err)
		}
		_ = sub.SetPendingLimits(-1, -1)
		subs = append(subs, sub)
	}
	done, quit := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-quit:
				return
			case m := <-ch:
				s.handleEvent(m)
			}
		}
	}()
	return func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
		close(quit)
		<-done
	}, nil
}

func (s *Service) handleEvent(m *nats.Msg) {
	site, subject := "", m.Subject
	if !strings.HasPrefix(subject, "$SYS.") {
		var err error
		if site, subject, err = fleet.ParseSiteSysSubject(subject); err != nil {
			s.log.Error("malformed site event", "error", err)
			return
		}
	}
	if strings.HasSuffix(subject, ".SHUTDOWN") {
		parts := strings.Split(subject, ".")
		if len(parts) == 4 {
			s.log.Info("broker shut down", "site", site, "server", parts[2])
			s.presence.serverGone(siteServer(site, parts[2]))
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
		}
		s.admitMu.Unlock()
		if len(older) > 0 {
			go s.supersede(ev, older)
		}
		_, agent := strings.CutPrefix(ev.Client.User, agentUserPrefix)
		if !ok && site != "" && agent {
			// The callout admits at a site only that site's machines:
			// a site's claim about any other machine is not believed.
			s.log.Warn("site claimed a connection of a machine that is not one of its own; ignored, and closed at the site",
				"site", site, "user", ev.Client.User, "name", ev.Client.Name, "host", ev.Client.Host)
			go s.kick(context.Background(), []connKey{k})
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
	subj := "$SYS.REQ.SERVER." + id + "." + verb
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
func (s *Service) resync(ctx context.Context) error {
	gen, taken, links := s.presence.generation(), s.presence.now(), s.links.mark()
	servers, err := s.pingServers(ctx)
	if err != nil {
		return err
	}
	snap := map[string]map[uint64]string{}
	alive := map[string]bool{}
	for _, id := range servers {
		alive[id] = true
		conns, err := s.serverConnz(ctx, id)
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
	s.confirmMissing(ctx, gen, snap)
	// A connection whose identity is no longer on record (its connect
	// event lost, or the kick failed) is not put back; it is closed.
	var stale []connKey
	s.admitMu.Lock()
	for server, conns := range snap {
		site, _ := serverSite(server)
		for cid, user := range conns {
			if !s.onRecord(user, nil, site) {
				delete(conns, cid)
				if _, agent := strings.CutPrefix(user, agentUserPrefix); agent || site == "" {
					stale = append(stale, connKey{server, cid})
				}
			}
		}
	}
	s.presence.resync(gen, snap, alive, taken)
	s.admitMu.Unlock()
	if len(stale) > 0 {
		s.log.Warn("closing connections whose identity was removed", "connections", len(stale))
		go s.kick(context.Background(), stale)
	}
	return nil
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

// pingServers lists the ids of every broker: the hub's (the cluster's)
// and, through each remote site's own account, that site's (named by
// siteServer).
func (s *Service) pingServers(ctx context.Context) ([]string, error) {
	targets := []string{""}
	for _, site := range s.cfg.LeafSites {
		targets = append(targets, site.Name)
	}
	found := make([][]string, len(targets))
	var wg sync.WaitGroup
	for i, site := range targets {
		wg.Go(func() {
			subj := serverPingSubject
			if site != "" {
				subj = fleet.SiteSysSubject(site, serverPingSubject)
			}
			ids, err := s.pingAt(ctx, subj)
			if err != nil {
				s.log.Debug("server ping failed", "site", site, "error", err)
			}
			for _, id := range ids {
				found[i] = append(found[i], siteServer(site, id))
			}
		})
	}
	wg.Wait()
	var ids []string
	for _, f := range found {
		ids = append(ids, f...)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("no broker answered %s", serverPingSubject)
	}
	return ids, nil
}

// pingAt collects the server ids that answer a ping on subject.
func (s *Service) pingAt(ctx context.Context, subject string) ([]string, error) {
	inbox := s.sys.NewRespInbox()
	sub, err := s.sys.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := s.sys.PublishRequest(subject, inbox, nil); err != nil {
		return nil, err
	}
	var ids []string
	wait := 2 * time.Second
	for {
		m, err := sub.NextMsgWithContext(withTimeout(ctx, wait))
		if err != nil {
			break
		}
		var r serverAPIResponse
		if json.Unmarshal(m.Data, &r) == nil && r.Server.ID != "" && !strings.Contains(r.Server.ID, "/") {
			ids = append(ids, r.Server.ID)
		}
		wait = 300 * time.Millisecond
	}
	return ids, nil
}

// serverConnz pages through one broker's FLEET connections.
func (s *Service) serverConnz(ctx context.Context, server string) (map[uint64]string, error) {
	out := map[uint64]string{}
	const page = 5000
	for offset := 0; ; offset += page {
		req, _ := json.Marshal(map[string]any{"acc": broker.FleetAccount, "auth": true, "offset": offset, "limit": page})
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
		for _, cn := range c.Conns {
			out[cn.Cid] = s.connUser(cn.User, cn.Tags)
		}
		if len(c.Conns) < page {
			return out, nil
		}
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
