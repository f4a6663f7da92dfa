package controlsvc

import (
	"context"
	"encoding/json"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// handleSessionEvent is handleEvent for a connection of a session (user
// "session:<id>"): it goes to the sessions' ONLINE set, never to the
// machines'. Sessions are admitted at the hub only: a remote site's
// claim of one is not believed.
func (tr *presenceTracker) handleSessionEvent(site, subject string, ev connEvent, k connKey) {
	if site != "" || tr.sessions == nil {
		tr.log.Debug("session connection not followed", "site", site, "user", ev.Client.User)
		return
	}
	if subject != connectSubject {
		tr.sessions.disconnected(k, ev.Reason)
		return
	}
	id := ev.Client.User[len(sessionUserPrefix):]
	if err := fleet.ValidateSessionID(id); err != nil {
		tr.log.Warn("session connection with a malformed id; ignored", "user", ev.Client.User, "error", err)
		return
	}
	if tr.awaitShared > 0 {
		if ch := tr.sessions.awaitAdmission(id, ev.Client.Tags); ch != nil {
			// Admitted by another replica, whose admission is on its
			// way (session_share.go): wait for it a moment. A
			// disconnect meanwhile leaves a tombstone, which the late
			// connect finds.
			go func() {
				select {
				case <-ch:
				case <-time.After(tr.awaitShared):
					tr.sessions.stopAwaiting(id, ch)
				}
				tr.sessionConnected(k, id, ev)
			}()
			return
		}
	}
	tr.sessionConnected(k, id, ev)
}

// sessionConnected adds session id's connection k to the sessions' ONLINE
// set, and closes what that supersedes.
func (tr *presenceTracker) sessionConnected(k connKey, id string, ev connEvent) {
	closeConns := tr.sessions.connected(k, sessionConnInfo{id: id, ip: ev.Client.Host, tags: ev.Client.Tags})
	if len(closeConns) > 0 {
		tr.log.Info("closing a session's connection: superseded by its newer one, or its app was removed",
			"session", id, "connections", len(closeConns), "new_host", ev.Client.Host)
		go tr.sessions.close(closeConns)
	}
}

// publishSessionEvent publishes a session event on the announcing
// connection (called in seq order).
func (tr *presenceTracker) publishSessionEvent(ev fleet.SessionEvent) {
	if !tr.publishing() {
		tr.log.Debug("session presence (published by the presence publisher)", "event", ev.Event, "session", ev.Session.ID, "reason", ev.Reason)
		return
	}
	tr.log.Info("session presence", "event", ev.Event, "session", ev.Session.ID, "app", ev.Session.App, "reason", ev.Reason)
	b, _ := json.Marshal(ev)
	if tr.announce != nil && tr.announce.Publish(fleet.SessionEventSubject(ev.Event, ev.Session.ID), b) == nil {
		tr.published.Add(1)
	}
}

// noteIP records the address of machine connection k (and where it is).
func (tr *presenceTracker) noteIP(k connKey, ip string) { tr.state.noteIP(k, ip, tr.locate) }

// confirmMissingSessions asks the brokers about each session connection
// presence holds that the CONNZ pages of a resync did not list, as
// confirmMissing does for machines (CONNZ pages by offset and skips live
// connections while others close); a connection still there, or one that
// cannot be checked, is put back into snap. Past maxConfirm the rest are
// kept.
func (tr *presenceTracker) confirmMissingSessions(ctx context.Context, gen uint64, snap map[string]map[uint64]sessionConnInfo) {
	i := 0
	for k, id := range tr.sessions.missingFrom(gen, snap) {
		held := sessionConnInfo{id: id}
		if i++; i > maxConfirm {
			snap[k.server][k.cid] = held
			continue
		}
		req, _ := json.Marshal(map[string]any{"acc": broker.FleetAccount, "auth": true, "cid": k.cid})
		m, err := tr.sys.RequestWithContext(withTimeout(ctx, 2*time.Second), serverRequest(k.server, "CONNZ"), req)
		var r serverAPIResponse
		var c connzData
		if err != nil || json.Unmarshal(m.Data, &r) != nil || r.Error != nil || json.Unmarshal(r.Data, &c) != nil {
			snap[k.server][k.cid] = held // cannot tell: keep it
			continue
		}
		for _, cn := range c.Conns {
			if cn.Cid == k.cid && cn.User == sessionUserPrefix+id {
				snap[k.server][k.cid] = sessionConnInfo{id: id, ip: cn.IP, tags: cn.Tags}
			}
		}
	}
}
