package controlsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// The brokers' system API the tracker asks on its SYS connection: PING
// for the live brokers, CONNZ for their FLEET connections, KICK to close
// one. A remote site's brokers are asked through the site's own account
// at the hub (serverRequest).

// serverPingSubject asks every broker reachable for its id.
const serverPingSubject = fleet.ServerPingSubject

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
		IP   string   `json:"ip"`
		Name string   `json:"name"`
	} `json:"connections"`
}

// connzConn is what the tracker keeps of one connection CONNZ listed.
type connzConn struct {
	user, ip, name string
	tags           []string
}

// maxHubServers bounds the hub's brokers one ping collects.
const maxHubServers = 1024

// Ping waits: for the first answer, after each answer for the next, and
// in all (a hard deadline, however many answers keep coming).
const (
	pingFirstWait = 2 * time.Second
	pingNextWait  = 300 * time.Millisecond
	pingMaxWait   = 3 * time.Second
)

// pingAt collects the (distinct) server ids that answer a ping on subject
// within pingMaxWait; more than max of them is an error.
func (tr *presenceTracker) pingAt(ctx context.Context, subject string, max int) ([]string, error) {
	inbox := tr.sys.NewRespInbox()
	sub, err := tr.sys.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := tr.sys.PublishRequest(subject, inbox, nil); err != nil {
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
func (tr *presenceTracker) serverConnz(ctx context.Context, server string, budget *int) (map[uint64]string, error) {
	conns, err := tr.serverConnzInfo(ctx, server, budget)
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]string, len(conns))
	for cid, c := range conns {
		out[cid] = c.user
	}
	return out, nil
}

// serverConnzInfo is serverConnz with each connection's address and tags.
func (tr *presenceTracker) serverConnzInfo(ctx context.Context, server string, budget *int) (map[uint64]connzConn, error) {
	out := map[uint64]connzConn{}
	const page = 5000
	for offset := 0; ; {
		limit := page
		if budget != nil {
			// One more than the budget: a full page past it is known.
			limit = min(page, *budget+1)
		}
		req, _ := json.Marshal(map[string]any{"acc": broker.FleetAccount, "auth": true, "offset": offset, "limit": limit})
		m, err := tr.sys.RequestWithContext(withTimeout(ctx, 5*time.Second), serverRequest(server, "CONNZ"), req)
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
			out[cn.Cid] = connzConn{user: connUser(tr.reg, cn.User, cn.Tags), ip: cn.IP, name: cn.Name, tags: cn.Tags}
		}
		if len(c.Conns) < limit {
			return out, nil
		}
		offset += limit
	}
}

// kick tells the brokers to close the connections now.
func (tr *presenceTracker) kick(ctx context.Context, conns []connKey) int {
	n := 0
	for _, k := range conns {
		if err := tr.kickOne(ctx, k); err != nil {
			tr.log.Error("closing connection failed", "server", k.server, "cid", k.cid, "error", err)
			continue
		}
		n++
	}
	return n
}

// kickOne tells connection k's broker to close it.
func (tr *presenceTracker) kickOne(ctx context.Context, k connKey) error {
	req, _ := json.Marshal(map[string]uint64{"cid": k.cid})
	m, err := tr.sys.RequestWithContext(withTimeout(ctx, 2*time.Second), serverRequest(k.server, "KICK"), req)
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
