package controlsvc

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// legacySnapshotKey is the one bucket of legacySnapLimit.
const legacySnapshotKey = "anyone on " + fleet.PresenceSnapshotSubject

// answerSnapshot answers a snapshot request on the unattributed
// fleet.PresenceSnapshotSubject (the SDK asks on
// ctl.<key>.presence.snapshot, see serveSnapshots), best effort. Whoever
// sent it is not known: it names a reply in an operator's control inbox,
// which only that operator can read, but any operator may name any
// operator's. So all of them share one bucket, which no operator's own
// subject uses: a flood there refuses only the legacy subject, for
// everyone, and never an operator's own snapshots; and naming many
// operators' inboxes does not multiply what the subject may cost. It
// always sends the whole snapshot, whatever the body (the machine ids
// alone are asked on the operator's own subject).
func (tr *presenceTracker) answerSnapshot(m *nats.Msg) {
	if !tr.publishing() {
		return // the presence publisher answers (leader.go)
	}
	owner, ok := fleet.InboxOwner(m.Reply)
	if !ok || !fleet.IsControlReply(m.Reply, owner) {
		// Only an operator's control inbox is a place to answer; the
		// broker would refuse anything else from this connection too.
		return
	}
	if _, ok := tr.reg.OperatorByKey(owner); !ok {
		return // nobody can read that inbox
	}
	if tr.limited(tr.fl, tr.legacySnapLimit, legacySnapshotKey, m.Reply, tr.snapshotParts()) {
		return
	}
	// Queued apart from the owner's own requests on its control
	// subject: whoever sent this may not be the owner.
	tr.queueSnapshot("inbox "+owner, m.Reply)
}

// snapshotParts is how many parts a snapshot has now: what it costs
// against the operator's snapshot limit, so the limit bounds bytes on a
// large fleet too.
func (tr *presenceTracker) snapshotParts() int {
	return max(1, (tr.state.count()+fleet.SnapshotChunk-1)/fleet.SnapshotChunk)
}

// Snapshots admitted wait in a fairQueue, one queue per asker, for
// snapshotWorkers to send them.
const (
	// snapshotQueue bounds the snapshots one asker may have waiting.
	snapshotQueue   = 256
	snapshotWorkers = 4
)

// queueSnapshot queues the snapshot for reply as owner's; with owner's
// queue full it is answered 503.
func (tr *presenceTracker) queueSnapshot(owner, reply string) {
	if !tr.snapWork.push(owner, reply) {
		sendError(tr.fl, reply, fleet.Errorf(fleet.CodeUnavailable, "%d presence snapshots for this operator are already waiting to be sent; retry in a second", snapshotQueue), 0)
	}
}

// snapshotWorkers sends the queued snapshots, each asker in turn, until
// ctx ends.
func (tr *presenceTracker) snapshotWorkers(ctx context.Context) {
	go func() {
		<-ctx.Done()
		tr.snapWork.close()
	}()
	for range snapshotWorkers {
		go func() {
			for {
				reply, ok := tr.snapWork.pop()
				if !ok {
					return
				}
				tr.sendSnapshot(tr.fl, reply, false)
			}
		}()
	}
}

// sendSnapshot publishes the ONLINE list to reply on nc, in parts of at most
// fleet.SnapshotChunk servers when the fleet is large: each server's entry,
// or with ids its machine id alone (fleet.SnapshotRequest). Every
// broadcast a workbench makes starts with this request, so each server's
// entry and id are encoded once and reused until presence or the
// registry changes; only the envelope (with the current time) is written
// per request. Both forms are cut at the same number of servers, so they
// cost the asker's limit the same (snapshotParts).
func (tr *presenceTracker) sendSnapshot(nc *nats.Conn, reply string, ids bool) {
	seq, epoch, entries := tr.snapshotEntries(ids)
	now, _ := json.Marshal(tr.clock().UTC())
	parts := max(1, (len(entries)+fleet.SnapshotChunk-1)/fleet.SnapshotChunk)
	per, list := 160, `],"time":`
	if ids {
		per, list = 40, `],"machines":[`
	}
	for i := range parts {
		chunk := entries[min(len(entries), i*fleet.SnapshotChunk):min(len(entries), (i+1)*fleet.SnapshotChunk)]
		b := make([]byte, 0, 96+len(now)+len(chunk)*per)
		b = append(b, `{"seq":`...)
		b = strconv.AppendUint(b, seq, 10)
		b = append(b, `,"epoch":"`...)
		b = append(b, epoch...)
		b = append(b, `","servers":[`...)
		if ids {
			b = append(b, list...)
		}
		for j, e := range chunk {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(b, e...)
		}
		b = append(b, `],"time":`...)
		b = append(b, now...)
		if parts > 1 {
			b = append(b, `,"part":`...)
			b = strconv.AppendInt(b, int64(i+1), 10)
			b = append(b, `,"parts":`...)
			b = strconv.AppendInt(b, int64(parts), 10)
		}
		b = append(b, '}')
		if err := nc.Publish(reply, b); err != nil {
			tr.log.Warn("snapshot reply not sent", "error", err)
			return
		}
	}
}

// snapCache holds each ONLINE server's snapshot entry, and its machine
// id, encoded.
type snapCache struct {
	mu        sync.Mutex
	presVer   uint64
	regChange uint64
	valid     bool
	seq       uint64
	epoch     string
	entries   [][]byte
	ids       [][]byte
}

// snapshotEntries returns the snapshot's seq and its servers' entries
// (with ids, their machine ids), encoded, renewing them when presence
// or the registry changed.
func (tr *presenceTracker) snapshotEntries(ids bool) (uint64, string, [][]byte) {
	c := &tr.snapCache
	c.mu.Lock()
	defer c.mu.Unlock()
	pv, rv := tr.state.version(), tr.reg.changes.Load()
	if !c.valid || c.presVer != pv || c.regChange != rv {
		snap := tr.state.snapshot()
		entries := make([][]byte, len(snap.Servers))
		idList := make([][]byte, len(snap.Servers))
		for i, sv := range snap.Servers {
			entries[i], _ = json.Marshal(sv)
			idList[i], _ = json.Marshal(sv.Machine)
		}
		// Versions read before the snapshot: a change in between renews
		// the cache on the next request rather than hiding.
		c.presVer, c.regChange, c.valid, c.seq, c.epoch, c.entries, c.ids = pv, rv, true, snap.Seq, snap.Epoch, entries, idList
	}
	if ids {
		return c.seq, c.epoch, c.ids
	}
	return c.seq, c.epoch, c.entries
}
