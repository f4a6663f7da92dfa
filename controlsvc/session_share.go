package controlsvc

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// Replicas share the sessions they admit. The callout that admits a
// session knows what the broker's connect event will not say (what the
// session declared, a signed app's user and claims, when it was
// admitted); the presence publisher, which announces the session, may be
// another replica. So each admission is also published, before the
// callout's answer and on the same connection, on SessionAdmittedSubject
// in the CONTROL account — where only the control service's own user
// connects (callout-issued users are in FLEET; a remote site's CONTROL
// link is bound to an account of its own, which imports nothing but its
// callout subject) — and every other replica keeps it as if it had
// admitted the session itself: the publisher announces it with those
// attributes, and every replica counts it against the app's and the
// address's caps.
const (
	// SessionAdmittedSubject carries one fleet.Session per admission.
	SessionAdmittedSubject = "cc.replicas.sessions.admitted"
	// ReplicaHeader names the replica that published it, InstanceHeader
	// its instance (leader.go: two replicas may share a name).
	ReplicaHeader  = "Cc-Replica"
	InstanceHeader = "Cc-Replica-Instance"
	// maxSharedSession bounds one shared admission's size.
	maxSharedSession = 64 << 10
)

// sharedSessions is a sessionGate that also tells the other replicas
// what it admits.
type sharedSessions struct {
	sessionGate
	share func(fleet.Session)
}

func (g sharedSessions) admitted(s fleet.Session) {
	g.sessionGate.admitted(s)
	g.share(s)
}

// shareAdmissions returns gate wrapped to publish each admission on nc,
// and keeps the other replicas' admissions in local. stop ends it.
func (s *Service) shareAdmissions(nc *nats.Conn, gate sessionGate, local *sessionPresence) (sessionGate, func(), error) {
	if local == nil {
		return gate, func() {}, nil
	}
	// The name and the instance: another live replica may have this
	// one's name (leader.go), and its admissions are not this one's.
	name, instance := s.cfg.ReplicaName, s.instance
	sub, err := nc.Subscribe(SessionAdmittedSubject, func(m *nats.Msg) {
		if ownMessage(m, name, instance) || len(m.Data) > maxSharedSession {
			return // its own, or not one
		}
		var sess fleet.Session
		if err := json.Unmarshal(m.Data, &sess); err != nil || fleet.ValidateSessionID(sess.ID) != nil {
			s.log.Warn("malformed shared session admission; ignored", "from", m.Header.Get(ReplicaHeader), "error", err)
			return
		}
		local.admitted(sess)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("subscribe to %s: %w", SessionAdmittedSubject, err)
	}
	_ = sub.SetPendingLimits(-1, 64<<20)
	share := func(sess fleet.Session) {
		b, err := json.Marshal(sess)
		if err != nil {
			return
		}
		m := &nats.Msg{Subject: SessionAdmittedSubject, Header: nats.Header{ReplicaHeader: []string{name}, InstanceHeader: []string{instance}}, Data: b}
		if err := nc.PublishMsg(m); err != nil {
			s.log.Debug("cannot share a session admission with the other replicas", "session", sess.ID, "error", err)
		}
	}
	return sharedSessions{sessionGate: gate, share: share}, func() { _ = sub.Unsubscribe() }, nil
}

// ownMessage reports whether m was published by this replica: its name
// and, when m names one (older replicas do not), its instance.
func ownMessage(m *nats.Msg, name, instance string) bool {
	if m.Header.Get(ReplicaHeader) != name {
		return false
	}
	in := m.Header.Get(InstanceHeader)
	return in == "" || in == instance
}

// sharedAdmissionWait is how long a session's connection waits for its
// admission by another replica: the admission is published before the
// callout answers, but it crosses the cluster on another route than the
// broker's connect event, which may come first.
const sharedAdmissionWait = 2 * time.Second

// awaitAdmission returns a channel closed once session id's admission is
// known, or nil when it need not wait: the admission is known, the
// session is ONLINE already, its connection names its app (tags), or too
// many wait.
func (p *sessionPresence) awaitAdmission(id string, tags []string) <-chan struct{} {
	if appFromTags(tags) != "" {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending[id] != nil || p.sessions[id] != nil || len(p.awaiting) >= maxPendingSessions {
		return nil
	}
	if p.awaiting == nil {
		p.awaiting = map[string]chan struct{}{}
	}
	ch := p.awaiting[id]
	if ch == nil {
		ch = make(chan struct{})
		p.awaiting[id] = ch
	}
	return ch
}

// stopAwaiting forgets a wait that timed out.
func (p *sessionPresence) stopAwaiting(id string, ch <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.awaiting[id]; c != nil && (<-chan struct{})(c) == ch {
		delete(p.awaiting, id)
	}
}
