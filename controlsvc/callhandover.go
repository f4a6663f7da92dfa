package controlsvc

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// Every replica matches the calls it sees (callmatch.go), but only the
// presence publisher writes their records (leader.go): two writers would
// count every call twice. A takeover leaves a gap — the old publisher
// gave the lease up (or died) and the next takes it at its next try, or
// once the old entry expires — and the calls made then would be in no
// log. So a replica that is not the publisher keeps what it matched, and
// drops each record once it sees the publisher write the same call (the
// records of the calls log carry the call's key, CallKeyHeader); when it
// becomes the publisher it writes those it never saw written. Records
// the publisher wrote before this replica matched the call are
// remembered too (the old publisher records its open calls as it
// closes), and this replica's own record of such a call is not written
// again. What it could not keep (past its bounds, or never seen written
// for longer than it keeps things) is noted as lost when it takes over.
const (
	// CallKeyHeader carries a call record's key: what tells the replicas
	// that two records are one call.
	CallKeyHeader = "Cc-Call"
	// handoverMaxRecords and handoverMaxOutcomes bound what one replica
	// keeps unwritten; handoverMaxSeen the written keys it remembers.
	handoverMaxRecords  = 20000
	handoverMaxOutcomes = 500000
	handoverMaxSeen     = 50000
	// handoverSettle is how long a new publisher waits before writing
	// what it kept: the old one's last records (it writes its open calls
	// as it closes) may still be on their way.
	handoverSettle = time.Second
)

// callHandover sits between the call matcher and the audit: see above.
type callHandover struct {
	now        func() time.Time
	publishing func() bool
	// write records rec (the audit and the call hooks); key is its call
	// key (callKey).
	write func(key string, rec fleet.AuditRecord)
	// lost notes n records lost from first to last, why saying why.
	lost func(n int, first, last time.Time, why string)
	// keep is how long a kept record or a seen key is kept: more than a
	// takeover takes (a lease and a try) and than a call stays open
	// after another replica recorded it early.
	keep time.Duration

	mu       sync.Mutex
	held     []*heldCall // oldest first; gone ones are skipped
	heldBy   map[string][]*heldCall
	outcomes int
	live     int
	// seen are the keys others wrote, oldest first; seenBy the times
	// of those not yet matched, by key, oldest first.
	seen   []seenKey
	seenBy map[string][]time.Time
	// since is when this replica was first seen publishing (zero: it
	// is not).
	since time.Time
	// missing tallies the records kept but given up on.
	missing            int
	missFirst, missEnd time.Time
}

type heldCall struct {
	key  string
	at   time.Time
	rec  fleet.AuditRecord
	gone bool
}

type seenKey struct {
	key string
	at  time.Time
}

func newCallHandover(now func() time.Time, publishing func() bool, keep time.Duration,
	write func(string, fleet.AuditRecord), lost func(int, time.Time, time.Time, string)) *callHandover {
	return &callHandover{now: now, publishing: publishing, keep: keep, write: write, lost: lost,
		heldBy: map[string][]*heldCall{}, seenBy: map[string][]time.Time{}}
}

// callKey is the short form of a watched call's key (callMatcher's: the
// caller, call token, copy, function and arguments' digest, and the
// repeat): the same on every replica that saw the same messages.
func callKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:16])
}

// record is the matcher's emit: rec, the record of the call with key.
func (h *callHandover) record(key string, rec fleet.AuditRecord) {
	k := callKey(key)
	h.mu.Lock()
	if ts := h.seenBy[k]; len(ts) > 0 {
		// Another replica wrote this call already.
		if len(ts) == 1 {
			delete(h.seenBy, k)
		} else {
			h.seenBy[k] = ts[1:]
		}
		h.mu.Unlock()
		return
	}
	if h.publishing() {
		h.mu.Unlock()
		h.write(k, rec)
		return
	}
	now := h.now()
	c := &heldCall{key: k, at: now, rec: rec}
	h.held = append(h.held, c)
	h.heldBy[k] = append(h.heldBy[k], c)
	h.live++
	h.outcomes += len(rec.Outcomes)
	for h.live > handoverMaxRecords || h.outcomes > handoverMaxOutcomes {
		h.giveUp(h.oldest(), now)
	}
	h.mu.Unlock()
}

// written is told of a call record another replica wrote (its key).
func (h *callHandover) written(k string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cs := h.heldBy[k]; len(cs) > 0 {
		h.drop(cs[0])
		return
	}
	if len(h.seen) >= handoverMaxSeen {
		h.forgetSeen(h.seen[0])
		h.seen = h.seen[1:]
	}
	now := h.now()
	h.seen = append(h.seen, seenKey{k, now})
	h.seenBy[k] = append(h.seenBy[k], now)
}

// tick forgets what is older than keep, and writes what was kept once
// this replica has been the publisher for handoverSettle.
func (h *callHandover) tick() {
	now := h.now()
	var out []*heldCall
	var n int
	var first, last time.Time
	h.mu.Lock()
	for len(h.seen) > 0 && now.Sub(h.seen[0].at) >= h.keep {
		h.forgetSeen(h.seen[0])
		h.seen = h.seen[1:]
	}
	if !h.publishing() {
		h.since = time.Time{}
		for c := h.oldest(); c != nil && now.Sub(c.at) >= h.keep; c = h.oldest() {
			// Never seen written: the publisher did not record it (or
			// recorded it under another key). Said if this replica
			// takes over.
			h.giveUp(c, now)
		}
		h.mu.Unlock()
		return
	}
	if h.since.IsZero() {
		h.since = now
	}
	if now.Sub(h.since) >= handoverSettle {
		for _, c := range h.held {
			if !c.gone {
				out = append(out, c)
			}
		}
		h.held, h.heldBy, h.live, h.outcomes = nil, map[string][]*heldCall{}, 0, 0
		n, first, last = h.missing, h.missFirst, h.missEnd
		h.missing = 0
	}
	h.mu.Unlock()
	for _, c := range out {
		h.write(c.key, c.rec)
	}
	if n > 0 && h.lost != nil {
		h.lost(n, first, last, "this replica matched these calls while another was the presence publisher and never saw them "+
			"recorded (the publisher fell behind, or more calls were made than a replica keeps for a takeover)")
	}
}

// oldest is the oldest record kept (nil: none).
func (h *callHandover) oldest() *heldCall {
	for len(h.held) > 0 && h.held[0].gone {
		h.held = h.held[1:]
	}
	if len(h.held) == 0 {
		return nil
	}
	return h.held[0]
}

// drop forgets kept record c (seen written).
func (h *callHandover) drop(c *heldCall) {
	c.gone = true
	h.live--
	h.outcomes -= len(c.rec.Outcomes)
	cs := h.heldBy[c.key]
	for i, x := range cs {
		if x == c {
			cs = append(cs[:i], cs[i+1:]...)
			break
		}
	}
	if len(cs) == 0 {
		delete(h.heldBy, c.key)
	} else {
		h.heldBy[c.key] = cs
	}
}

// giveUp forgets kept record c unwritten, tallying it.
func (h *callHandover) giveUp(c *heldCall, now time.Time) {
	if c == nil {
		return
	}
	h.drop(c)
	if h.missing == 0 {
		h.missFirst = c.rec.Time
	}
	h.missing++
	h.missEnd = now
}

// forgetSeen forgets seen key s unless a record of this replica's
// matched it already (that took the oldest of its key).
func (h *callHandover) forgetSeen(s seenKey) {
	ts := h.seenBy[s.key]
	if len(ts) == 0 || ts[0].After(s.at) {
		return
	}
	if len(ts) == 1 {
		delete(h.seenBy, s.key)
	} else {
		h.seenBy[s.key] = ts[1:]
	}
}

// watchWritten follows the call records written to the calls log (by
// any replica) on nc, telling h of the others'.
func (s *Service) watchWritten(nc *nats.Conn, h *callHandover) error {
	sub, err := nc.Subscribe(AuditSubjectPrefix+fleet.AuditLogCalls+".>", func(m *nats.Msg) {
		k := m.Header.Get(CallKeyHeader)
		if k == "" || m.Header.Get(InstanceHeader) == s.instance {
			return // no call's, or this replica's own
		}
		h.written(k)
	})
	if err != nil {
		return fmt.Errorf("follow the calls log: %w", err)
	}
	_ = sub.SetPendingLimits(-1, 64<<20)
	s.closers = append(s.closers, func() { _ = sub.Unsubscribe() })
	return nil
}
