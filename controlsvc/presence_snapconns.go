package controlsvc

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// snapshotConns serve each operator's ctl.<key>.presence.snapshot (and
// ctl.<key>.sessions.snapshot) on a connection of its own. A flood of snapshot requests then waits in its
// sender's connection (in the broker's buffer toward it and in its one
// subscription) and another operator's request, on its own connection,
// is taken at once: on one shared connection, or one wildcard
// subscription, it queued behind the whole flood. The answers go out on
// the same connection, so an operator that does not read its answers
// backs up only its own.
type snapshotConns struct {
	mu    sync.Mutex
	conns map[string]*nats.Conn // operator key → its connection
	seen  uint64                // the registry's change count last followed
	shut  bool                  // the service is closing: serve no more
}

// serveSnapshots makes sure operator name's snapshot subject is served.
// The callout calls it before it lets the operator's connection in, so
// the first request finds it (the subscription is flushed to the broker).
func (tr *presenceTracker) serveSnapshots(name string) {
	o, ok := tr.reg.Operator(name)
	if !ok {
		return
	}
	c := &tr.snapConns
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conns == nil {
		c.conns = map[string]*nats.Conn{}
	}
	if c.shut || c.conns[o.Key] != nil {
		return
	}
	nc, err := tr.dialSnapshots(o.Key)
	if err != nil {
		// The SDK then finds no responders and asks on
		// fleet.PresenceSnapshotSubject, served on the fleet connection.
		tr.log.Warn("cannot serve an operator's presence snapshots on a connection of its own", "operator", name, "error", err)
		return
	}
	c.conns[o.Key] = nc
}

func (tr *presenceTracker) dialSnapshots(key string) (*nats.Conn, error) {
	nc, err := tr.dialFleet("cc-control-snapshots")
	if err != nil {
		return nil, err
	}
	serve := map[string]nats.MsgHandler{
		fleet.OpPresenceSnapshot: func(m *nats.Msg) { tr.answerCtlSnapshot(nc, m) },
	}
	if tr.sessions != nil {
		// The session snapshot too: on the operator's own subject, so
		// the sender is known and pays (session_snapshot.go).
		serve[fleet.OpSessionsSnapshot] = func(m *nats.Msg) { tr.answerSessionSnapshot(nc, m) }
	}
	for op, h := range serve {
		sub, err := nc.Subscribe(fleet.CtlSubject(key, op), h)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("subscribe to %s: %w", fleet.CtlSubject(key, op), err)
		}
		// A flood waits here, and is worked off at a map lookup per
		// request.
		_ = sub.SetPendingLimits(-1, 64<<20)
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		nc.Close()
		return nil, fmt.Errorf("subscribe to %s: %w", fleet.CtlWildcard(key), err)
	}
	return nc, nil
}

// answerCtlSnapshot answers ctl.<key>.presence.snapshot on nc, the
// operator's own connection: the broker lets only the operator with that
// key publish it, so that operator's own limit applies. The request's
// body (fleet.SnapshotRequest) may ask for the machine ids alone: the
// same list, to the same operator, at the same cost.
func (tr *presenceTracker) answerCtlSnapshot(nc *nats.Conn, m *nats.Msg) {
	if !tr.publishing() {
		return // the presence publisher answers, numbered as its events (leader.go)
	}
	if !answersToAsker(m.Subject, m.Reply) {
		return // as apiEndpoint: answer only the asker's own inbox
	}
	key, _, _ := fleet.ParseCtlSubject(m.Subject)
	if tr.limited(nc, tr.snapLimit, key, m.Reply, tr.snapshotParts()) {
		return
	}
	if _, ok := tr.reg.OperatorByKey(key); !ok {
		sendError(nc, m.Reply, fleet.Errorf(fleet.CodeForbidden, "key %s is not an operator", key), 0)
		return
	}
	req, err := fleet.ParseSnapshotRequest(m.Data)
	if err != nil {
		sendError(nc, m.Reply, fleet.Errorf(fleet.CodeBadRequest, "%v", err), 0)
		return
	}
	tr.sendSnapshot(nc, m.Reply, req.IDs)
}

// serveConnectedOperators serves the snapshots of the operators connected
// now (their connections were let in before this start and do not pass
// the callout again).
func (tr *presenceTracker) serveConnectedOperators() {
	for _, o := range tr.reg.Operators() {
		if tr.operatorConnections(o.Name) > 0 {
			tr.serveSnapshots(o.Name)
		}
	}
}

// snapshotConnsLoop closes the connection of a removed operator, at most
// a quarter second after the registry changed.
func (tr *presenceTracker) snapshotConnsLoop(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v := tr.reg.changes.Load()
		c := &tr.snapConns
		c.mu.Lock()
		if c.seen != v {
			c.seen = v
			for key, nc := range c.conns {
				if _, ok := tr.reg.OperatorByKey(key); !ok {
					nc.Close()
					delete(c.conns, key)
				}
			}
		}
		c.mu.Unlock()
	}
}

func (tr *presenceTracker) closeSnapshotConns() {
	c := &tr.snapConns
	c.mu.Lock()
	defer c.mu.Unlock()
	c.shut = true
	for key, nc := range c.conns {
		nc.Close()
		delete(c.conns, key)
	}
}
