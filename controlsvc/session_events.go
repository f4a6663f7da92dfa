package controlsvc

import (
	"encoding/json"

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
	tr.log.Info("session presence", "event", ev.Event, "session", ev.Session.ID, "app", ev.Session.App, "reason", ev.Reason)
	b, _ := json.Marshal(ev)
	if tr.announce != nil {
		_ = tr.announce.Publish(fleet.SessionEventSubject(ev.Event, ev.Session.ID), b)
	}
}

// noteIP records the address of machine connection k (and where it is).
func (tr *presenceTracker) noteIP(k connKey, ip string) { tr.state.noteIP(k, ip, tr.locate) }
