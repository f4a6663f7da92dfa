package controlsvc

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// A session's credentials bound its subscriptions (setSessionLimits), but
// nats-server does not apply a callout user's limits. So the tracker
// asks each hub broker, every sessionSubsEvery, for the FLEET
// connections holding the most subscriptions (CONNZ sorted by them) and
// closes the sessions among them holding more than their app's functions
// and sessionSubsSlack: one session cannot pile up subscriptions for
// long (memory on the broker, matching on every message). It pages
// through CONNZ while the page's last connection still holds more than
// any session may (agents and operators may hold many and fill the first
// pages), at most sessionSubsPages pages per broker and check.
const sessionSubsEvery = 2 * time.Second

// sessionSubsTop is how many connections one CONNZ page holds,
// sessionSubsPages how many pages one check reads of a broker at most.
// Variables so a test can lower them.
var (
	sessionSubsTop   = 100
	sessionSubsPages = 20
)

// sessionSubsLoop checks the sessions' subscriptions every
// sessionSubsEvery until ctx ends.
func (tr *presenceTracker) sessionSubsLoop(ctx context.Context) {
	t := time.NewTicker(sessionSubsEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if tr.publishing() { // one replica closes and audits (leader.go)
				tr.checkSessionSubs(ctx)
			}
		}
	}
}

// connzSubs is what CONNZ sorted by subscriptions says of a connection.
type connzSubs struct {
	Conns []struct {
		Cid  uint64 `json:"cid"`
		User string `json:"authorized_user"`
		Subs int    `json:"subscriptions"`
	} `json:"connections"`
}

// checkSessionSubs closes the sessions holding more subscriptions than
// their credentials allow.
func (tr *presenceTracker) checkSessionSubs(ctx context.Context) {
	if tr.sessions == nil || tr.sessions.appOf == nil || tr.sys == nil || tr.sessions.count() == 0 {
		return // no session ONLINE: nothing to sort the brokers' connections for
	}
	servers, _ := tr.pingAt(ctx, serverPingSubject, maxHubServers)
	for _, server := range servers {
		for page := range sessionSubsPages {
			n, last, ok := tr.checkSessionSubsPage(ctx, server, page*sessionSubsTop)
			if !ok || n < sessionSubsTop || last <= sessionSubsSlack {
				break // the rest hold no more than any session may
			}
		}
	}
}

// checkSessionSubsPage checks one page of server's FLEET connections
// sorted by subscriptions, from offset: how many it held and the last
// one's subscriptions; false if the broker did not answer.
func (tr *presenceTracker) checkSessionSubsPage(ctx context.Context, server string, offset int) (n, last int, ok bool) {
	req, _ := json.Marshal(map[string]any{"acc": broker.FleetAccount, "auth": true, "sort": "subs", "limit": sessionSubsTop, "offset": offset})
	m, err := tr.sys.RequestWithContext(withTimeout(ctx, 5*time.Second), serverRequest(server, "CONNZ"), req)
	if err != nil {
		return 0, 0, false
	}
	var r serverAPIResponse
	var c connzSubs
	if json.Unmarshal(m.Data, &r) != nil || r.Error != nil || json.Unmarshal(r.Data, &c) != nil {
		return 0, 0, false
	}
	for _, cn := range c.Conns {
		last = cn.Subs
		id, ok := strings.CutPrefix(cn.User, sessionUserPrefix)
		if !ok || fleet.ValidateSessionID(id) != nil {
			continue
		}
		if cn.Subs <= sessionSubsSlack {
			continue
		}
		// CONNZ shows no tags of a callout user: the app is presence's
		// word (not ONLINE yet: the next check).
		name, ok := tr.sessions.appOfSession(id)
		if !ok {
			continue
		}
		limit := sessionSubsSlack
		if app, ok := tr.sessions.appOf(name); ok {
			limit += len(app.Functions)
		}
		if cn.Subs <= limit {
			continue
		}
		reason := fmt.Sprintf("held %d subscriptions, more than the %d its app's functions need", cn.Subs, limit)
		if tr.closeSession == nil || !tr.closeSession(id, reason) {
			go tr.kick(context.Background(), []connKey{{server: server, cid: cn.Cid}})
		}
	}
	return len(c.Conns), last, true
}
