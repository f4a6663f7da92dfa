package controlsvc

import (
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// sessionSnapshotSlack is what a session snapshot part's envelope may
// take besides its sessions (seq, epoch, total, time, part, parts).
const sessionSnapshotSlack = 512

// sessionSnapCache holds the ONLINE sessions and each one's snapshot
// entry, encoded once and reused until the sessions change.
type sessionSnapCache struct {
	mu       sync.Mutex
	valid    bool
	ver      uint64
	seq      uint64
	epoch    string
	sessions []fleet.Session
	entries  [][]byte
}

// sessionSnapshotEntries returns the ONLINE sessions, their encoded
// entries, and the seq and epoch they are as of.
func (tr *presenceTracker) sessionSnapshotEntries() ([]fleet.Session, [][]byte, uint64, string) {
	c := &tr.sessSnapCache
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.valid && c.ver == tr.sessions.version() {
		return c.sessions, c.entries, c.seq, c.epoch
	}
	sessions, seq, epoch, ver := tr.sessions.snapshot()
	entries := make([][]byte, len(sessions))
	for i := range sessions {
		entries[i], _ = json.Marshal(&sessions[i])
	}
	c.valid, c.ver, c.seq, c.epoch, c.sessions, c.entries = true, ver, seq, epoch, sessions, entries
	return sessions, entries, seq, epoch
}

// answerSessionSnapshot answers a fleet.SessionQuery on
// ctl.<key>.sessions.snapshot (fleet.OpSessionsSnapshot), on nc, the
// operator's own snapshot connection (presence_snapconns.go): the broker
// lets only the operator with that key publish there, so the sender is
// known. It is answered only in its own control inbox, only if it may see
// sessions (fleet.MaySeeSessions; 403 otherwise), and within its own
// session snapshot limit, which a snapshot in parts costs once a part.
// (A subject shared by all operators, as the machines' legacy one, could
// not say who sent a request: the limit of whoever's inbox it named paid,
// and any operator could spend another's.)
func (tr *presenceTracker) answerSessionSnapshot(nc *nats.Conn, m *nats.Msg) {
	if !tr.publishing() {
		return // the presence publisher answers, numbered as its events (leader.go)
	}
	if !answersToAsker(m.Subject, m.Reply) {
		return // as apiEndpoint: answer only the asker's own inbox
	}
	key, _, _ := fleet.ParseCtlSubject(m.Subject)
	op, ok := tr.reg.OperatorByKey(key)
	if !ok {
		sendError(nc, m.Reply, fleet.Errorf(fleet.CodeForbidden, "key %s is not an operator", key), 0)
		return
	}
	if !fleet.MaySeeSessions(op.Role, op.Sessions) {
		sendError(nc, m.Reply, fleet.Errorf(fleet.CodeForbidden,
			"operator %s may not see sessions: an admin grants it with cc-bench operators add %s --sessions", op.Name, op.Name), 0)
		return
	}
	if tr.limited != nil && tr.limited(nc, tr.sessSnapLimit, key, m.Reply, max(1, (tr.sessions.count()+fleet.SnapshotChunk-1)/fleet.SnapshotChunk)) {
		return
	}
	var q fleet.SessionQuery
	if len(m.Data) > 0 {
		if err := json.Unmarshal(m.Data, &q); err != nil {
			sendError(nc, m.Reply, fleet.Errorf(fleet.CodeBadRequest, "session query: %v; send {\"where\":{\"city\":\"Paris\"},\"limit\":100} or an empty body for all", err), 0)
			return
		}
	}
	if q.Limit < 0 {
		sendError(nc, m.Reply, fleet.Errorf(fleet.CodeBadRequest, "session query: limit %d is negative; use 0 for all", q.Limit), 0)
		return
	}
	if _, err := fleet.MatchSession(&fleet.Session{}, q.Where); err != nil {
		sendError(nc, m.Reply, fleet.Errorf(fleet.CodeBadRequest, "session query: %v", err), 0)
		return
	}
	tr.sendSessionSnapshot(nc, m.Reply, q)
}

// sendSessionSnapshot publishes the sessions q selects to reply, in as
// many parts as needed for none to exceed the broker's payload limit.
func (tr *presenceTracker) sendSessionSnapshot(nc *nats.Conn, reply string, q fleet.SessionQuery) {
	sessions, entries, seq, epoch := tr.sessionSnapshotEntries()
	var picked [][]byte
	total := 0
	for i := range sessions {
		if ok, _ := fleet.MatchSession(&sessions[i], q.Where); !ok {
			continue
		}
		total++
		if q.Limit == 0 || len(picked) < q.Limit {
			picked = append(picked, entries[i])
		}
	}
	limit := int(nc.MaxPayload()) - sessionSnapshotSlack
	if err := publishSessionParts(picked, total, seq, epoch, tr.clock(), limit, func(b []byte) error { return nc.Publish(reply, b) }); err != nil {
		tr.log.Warn("session snapshot reply not sent", "error", err)
	}
}

// publishSessionParts cuts entries into parts of at most limit bytes of
// entries each (at least one entry a part) and publishes each part, a
// fleet.SessionSnapshot numbered Part of Parts when there are several;
// it stops at the first error.
func publishSessionParts(entries [][]byte, total int, seq uint64, epoch string, now time.Time, limit int, publish func([]byte) error) error {
	var cuts []int // where each part starts
	size := 0
	for i, e := range entries {
		if i == 0 || size+len(e)+1 > limit {
			cuts = append(cuts, i)
			size = 0
		}
		size += len(e) + 1
	}
	if len(cuts) == 0 {
		cuts = []int{0}
	}
	t, _ := json.Marshal(now.UTC())
	parts := len(cuts)
	for p, start := range cuts {
		end := len(entries)
		if p+1 < parts {
			end = cuts[p+1]
		}
		b := make([]byte, 0, sessionSnapshotSlack+size)
		b = append(b, `{"seq":`...)
		b = strconv.AppendUint(b, seq, 10)
		b = append(b, `,"epoch":`...)
		b = strconv.AppendQuote(b, epoch)
		b = append(b, `,"sessions":[`...)
		for j, e := range entries[start:end] {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(b, e...)
		}
		b = append(b, `],"total":`...)
		b = strconv.AppendInt(b, int64(total), 10)
		b = append(b, `,"time":`...)
		b = append(b, t...)
		if parts > 1 {
			b = append(b, `,"part":`...)
			b = strconv.AppendInt(b, int64(p+1), 10)
			b = append(b, `,"parts":`...)
			b = strconv.AppendInt(b, int64(parts), 10)
		}
		b = append(b, '}')
		if err := publish(b); err != nil {
			return err
		}
	}
	return nil
}
