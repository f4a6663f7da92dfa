package controlsvc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
)

// Presence history: what is remembered of each machine's presence (its
// last-seen record, KV bucket LastSeenBucket, one key per machine) and the
// joins and leaves themselves (stream HistoryStream, kept for
// HistoryConfig.Retention), both in the CONTROL account's JetStream:
// nobody in FLEET can reach them, only the control API's OpHistory and
// machines.list read them out.
//
// They are written from the presence event path (presenceTracker's
// publishEvent), so only the replica that publishes presence events
// writes them. Writing never holds up presence: events go to a bounded
// queue and a writer publishes them asynchronously, a batch at a time,
// the last-seen records coalesced per machine. Past the queue events are
// dropped from the history (counted and logged); the in-memory last-seen
// is updated regardless.
const (
	HistoryStream        = "CC_HISTORY"
	HistorySubjectPrefix = "cc.history."
	LastSeenBucket       = "cc_lastseen"

	DefaultHistoryRetention = 30 * 24 * time.Hour
	DefaultHistoryMaxBytes  = 256 << 20

	// historyQueue bounds the events waiting to be written: a
	// 10,000-machine reconnect storm is 20,000 events.
	historyQueue = 1 << 16
	// historyBatch is how many events one write round takes: its
	// entries and last-seen records (at most 2 × historyBatch) stay
	// within the async publishes allowed in flight, so none stalls.
	historyBatch = 1024
	// historyDefaultLimit is a page's size when the request names none.
	historyDefaultLimit = 1000
	// historyReplyBytes bounds one OpHistory reply.
	historyReplyBytes = 512 << 10
	// historyWindow is how many sequence numbers a newest-first page
	// reads at a time, and the most entries one read returns.
	historyWindow = 1000
	// historyWindows and historyReadBudget bound one newest-first page:
	// the windows it looks into and the messages it reads; past either
	// it answers what it found, with a cursor to go on.
	historyWindows    = 200
	historyReadBudget = 20000
	// historyReadSlack is how many entries a window's read asks for
	// beyond its count, for entries written or deleted meanwhile.
	historyReadSlack    = 16
	historyDropLogEvery = 10 * time.Second

	// OpHistory requests wait in a fair queue, one per operator, for
	// historyWorkers to answer them, each operator's in turn and at most
	// historyBusy of one operator's at a time: a burst of one operator
	// (--control-burst is 1,000) keeps one worker, and another's request
	// is answered next. Past historyWaiting waiting an operator's request
	// is refused (429, retry after historyRetry), and one that waited
	// past apiTimeout is not run (the asker gave up).
	historyWorkers = 2
	historyBusy    = 1
	historyWaiting = 16
	historyRetry   = time.Second
	// historyReadsPerToken: past the one token of the control limit a
	// request pays on arrival, a history page costs one more per this
	// many messages it read.
	historyReadsPerToken = 100
)

// HistoryConfig bounds the presence history.
type HistoryConfig struct {
	// Retention is how long joins and leaves are kept (default
	// DefaultHistoryRetention; cc-control --history-retention).
	Retention time.Duration
	// MaxBytes bounds the history stream: past it the oldest entries go
	// (default DefaultHistoryMaxBytes; cc-control --history-max-bytes).
	MaxBytes int64
	// PerMachine bounds the joins, and the leaves, kept of one machine:
	// past it that machine's oldest go, never another's, so a machine
	// that reconnects in a loop cannot push the others' entries out
	// (default HistoryPerMachine(MaxBytes); cc-control
	// --history-per-machine).
	PerMachine int64
}

// historyEntryBytes is about what one entry takes in the stream (its
// JSON with a few labels, its subject, the store's overhead).
const historyEntryBytes = 256

// DefaultHistoryPerMachine is the most joins (and leaves) kept of one
// machine by default, on a history of DefaultHistoryMaxBytes or more.
const DefaultHistoryPerMachine = 1000

// HistoryPerMachine is HistoryConfig.PerMachine's default for a history
// of maxBytes: one machine's entries take at most about a sixteenth of
// it, between 16 and DefaultHistoryPerMachine of each kind.
func HistoryPerMachine(maxBytes int64) int64 {
	return min(DefaultHistoryPerMachine, max(16, maxBytes/16/(2*historyEntryBytes)))
}

func (c *HistoryConfig) fill() {
	if c.Retention <= 0 {
		c.Retention = DefaultHistoryRetention
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultHistoryMaxBytes
	}
	if c.PerMachine <= 0 {
		c.PerMachine = HistoryPerMachine(c.MaxBytes)
	}
}

// lastSeen is the value of a machine's key in LastSeenBucket.
type lastSeen struct {
	Machine string `json:"machine"`
	fleet.Seen
}

// historyLog keeps the last-seen records and the history.
type historyLog struct {
	log *slog.Logger
	nc  *nats.Conn
	cfg HistoryConfig
	js  jetstream.JetStream // nil: not durable (memory only)
	kv  jetstream.KeyValue
	// unavailable says why the history cannot be read.
	unavailable string
	queue       chan fleet.PresenceEvent
	// work holds the OpHistory requests waiting to be answered.
	work *fairQueueOf[historyJob]

	mu   sync.Mutex
	seen map[string]lastSeen

	dropped   atomic.Int64
	lastDrop  atomic.Int64 // unix nanos of the last drop logged
	failed    atomic.Int64
	quit      chan struct{}
	done      sync.WaitGroup
	closeOnce sync.Once
	stopWatch func()
	// follower follows the last-seen bucket (nil: not durable), checking
	// it every watchCheck (0: watchStallCheck).
	follower   *kvFollower
	watchCheck time.Duration
	// now is the clock for drop logging (nil: time.Now).
	now func() time.Time
}

func newHistoryLog(nc *nats.Conn, log *slog.Logger, cfg HistoryConfig) *historyLog {
	cfg.fill()
	return &historyLog{log: log, nc: nc, cfg: cfg, queue: make(chan fleet.PresenceEvent, historyQueue),
		seen: map[string]lastSeen{}, quit: make(chan struct{}), stopWatch: func() {}}
}

func (h *historyLog) clock() time.Time {
	if h.now != nil {
		return h.now()
	}
	return time.Now()
}

// lastSeenKey is machine id's key in LastSeenBucket: ids may hold ':',
// which KV keys refuse, so the id is base64url-encoded.
func lastSeenKey(id string) string {
	return "machine." + base64.RawURLEncoding.EncodeToString([]byte(id))
}

// lastSeenID is the machine id of LastSeenBucket key key.
func lastSeenID(key string) (string, bool) {
	enc, ok := strings.CutPrefix(key, "machine.")
	if !ok {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	return string(b), err == nil
}

// historySubject is where an event of machine id is stored.
func historySubject(event, id string) string {
	return HistorySubjectPrefix + event + "." + fleet.MachineToken(id)
}

// open creates (or updates) the history stream and the last-seen bucket
// and loads what is remembered. When that fails it returns an error
// saying why, unless notDurable: then the history is kept in memory
// only (last-seen) and says so.
func (h *historyLog) open(ctx context.Context, notDurable bool) error {
	err := h.openStores(ctx)
	if err == nil {
		return h.load(ctx)
	}
	h.js, h.kv = nil, nil
	h.unavailable = "the presence history is not durable here (cc-control runs with --no-durable-audit): " + err.Error() +
		"; last-seen times are kept in memory until cc-control restarts"
	if !notDurable {
		return fmt.Errorf("presence history: %w. Run with --no-durable-audit to start without a durable history", err)
	}
	h.log.Warn("the presence history is NOT durable (--no-durable-audit): last-seen is kept in memory only", "why", err)
	return nil
}

func (h *historyLog) openStores(ctx context.Context) error {
	js, err := jetstream.New(h.nc, jetstream.WithPublishAsyncMaxPending(4*historyBatch))
	if err != nil {
		return err
	}
	scfg := jetstream.StreamConfig{
		Name:        HistoryStream,
		Description: "commandcontrol presence history: machines' joins and leaves",
		Subjects:    []string{HistorySubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      h.cfg.Retention,
		MaxBytes:    h.cfg.MaxBytes,
		// The subjects are per machine and event.
		MaxMsgsPerSubject: h.cfg.PerMachine,
		AllowDirect:       true,
	}
	if _, err := createReplicated(h.log, "stream "+HistoryStream, func(r int) error {
		scfg.Replicas = r
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := js.CreateOrUpdateStream(cctx, scfg)
		return err
	}); err != nil {
		return fmt.Errorf("stream %s: %w", HistoryStream, err)
	}
	kcfg := jetstream.KeyValueConfig{
		Bucket:      LastSeenBucket,
		Description: "commandcontrol: each registered machine's last-seen record",
		History:     1,
		Storage:     jetstream.FileStorage,
	}
	var kv jetstream.KeyValue
	if _, err := createReplicated(h.log, "bucket "+LastSeenBucket, func(r int) error {
		kcfg.Replicas = r
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var err error
		kv, err = js.CreateOrUpdateKeyValue(cctx, kcfg)
		return err
	}); err != nil {
		return fmt.Errorf("KV bucket %s: %w", LastSeenBucket, err)
	}
	h.js, h.kv = js, kv
	return nil
}

// load reads every last-seen record, then keeps following the bucket
// (kvFollower: started again after a reconnect or a stall): whichever
// replica writes, every replica answers the same.
func (h *historyLog) load(ctx context.Context) error {
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	st, err := h.js.Stream(cctx, "KV_"+LastSeenBucket)
	ccancel()
	if err != nil {
		return fmt.Errorf("KV bucket %s: %w", LastSeenBucket, err)
	}
	h.follower = newKVFollower(LastSeenBucket, h.nc, h.kv, st, h.log, h.applySeen)
	h.follower.check = h.watchCheck
	wctx, cancel := context.WithCancel(context.Background())
	loaded := make(chan struct{})
	if err := h.follower.run(wctx, loaded); err != nil {
		cancel()
		return fmt.Errorf("KV bucket %s: watch: %w", LastSeenBucket, err)
	}
	h.stopWatch = func() {
		cancel()
		<-h.follower.done
	}
	select {
	case <-loaded:
		h.log.Info("last-seen records loaded", "machines", h.count())
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return fmt.Errorf("KV bucket %s: loading the last-seen records took over 30 s", LastSeenBucket)
	}
}

// applySeen applies a change of the last-seen bucket.
func (h *historyLog) applySeen(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		// Forgotten (removed from the registry) by a replica.
		if id, ok := lastSeenID(e.Key()); ok {
			h.mu.Lock()
			delete(h.seen, id)
			h.mu.Unlock()
		}
		return
	}
	var rec lastSeen
	if json.Unmarshal(e.Value(), &rec) != nil || rec.Machine == "" {
		h.log.Warn("last-seen record unreadable; ignored", "key", e.Key())
		return
	}
	h.remember(rec)
}

// remember keeps rec unless a newer record of its machine is known.
func (h *historyLog) remember(rec lastSeen) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur, ok := h.seen[rec.Machine]; ok && rec.LastSeen.Before(cur.LastSeen) {
		return
	}
	h.seen[rec.Machine] = rec
}

func (h *historyLog) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.seen)
}

// seenOf is what is remembered of machine id.
func (h *historyLog) seenOf(id string) (fleet.Seen, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	rec, ok := h.seen[id]
	return rec.Seen, ok
}

// forgetEvent, queued by forget, has the writer delete a machine's
// last-seen record (never a history entry).
const forgetEvent = "forget"

// forget drops what is remembered of machine id (removed from the
// registry): a re-added id is not shown its old OFFLINE time. The
// record is deleted from the bucket after the events queued before.
func (h *historyLog) forget(id string) {
	h.mu.Lock()
	delete(h.seen, id)
	h.mu.Unlock()
	if h.js == nil {
		return
	}
	select {
	case h.queue <- fleet.PresenceEvent{Event: forgetEvent, Machine: id}:
	default:
		h.dropped.Add(1) // the record stays; seenOf's registration check hides it
	}
}

// record takes a presence event (called under presence's lock, in event
// order): the in-memory last-seen changes at once, the stores later. It
// never blocks: past the queue the event is dropped from the history,
// counted and logged.
func (h *historyLog) record(ev fleet.PresenceEvent) {
	if ev.Event != fleet.EventJoined && ev.Event != fleet.EventLeft {
		return
	}
	h.mu.Lock()
	rec := h.seen[ev.Machine]
	rec.Machine = ev.Machine
	rec.Online = ev.Event == fleet.EventJoined
	rec.Since, rec.LastSeen = ev.Time, ev.Time
	if !rec.Online {
		rec.Reason = ev.Reason
	}
	h.seen[ev.Machine] = rec
	h.mu.Unlock()
	if h.js == nil {
		return
	}
	select {
	case h.queue <- ev:
	default:
		n := h.dropped.Add(1)
		now := h.clock().UnixNano()
		if last := h.lastDrop.Load(); now-last >= int64(historyDropLogEvery) && h.lastDrop.CompareAndSwap(last, now) {
			h.log.Warn("presence history writer fell behind (queue full): events dropped from the history; last-seen in memory is current",
				"dropped_total", n, "queue", historyQueue)
		}
	}
}

// start begins writing.
func (h *historyLog) start() {
	if h.js == nil {
		return
	}
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		for {
			select {
			case <-h.quit:
				for b := h.drain(nil); len(b) > 0; b = h.drain(nil) {
					h.writeBatch(b)
				}
				return
			case ev := <-h.queue:
				h.writeBatch(h.drain([]fleet.PresenceEvent{ev}))
			}
		}
	}()
}

// drain adds the queued events to batch, up to historyBatch.
func (h *historyLog) drain(batch []fleet.PresenceEvent) []fleet.PresenceEvent {
	for len(batch) < historyBatch {
		select {
		case ev := <-h.queue:
			batch = append(batch, ev)
		default:
			return batch
		}
	}
	return batch
}

// writeBatch publishes a batch's entries and, per machine, its last
// last-seen record, asynchronously, and waits for the acknowledgements.
func (h *historyLog) writeBatch(batch []fleet.PresenceEvent) {
	if len(batch) == 0 {
		return
	}
	var futures []jetstream.PubAckFuture
	last := map[string]fleet.PresenceEvent{}
	var order []string
	for _, ev := range batch {
		if ev.Event == forgetEvent {
			if _, ok := last[ev.Machine]; !ok {
				order = append(order, ev.Machine)
			}
			last[ev.Machine] = ev
			continue
		}
		b, _ := json.Marshal(fleet.HistoryEntry{Event: ev.Event, Machine: ev.Machine, Time: ev.Time, Reason: ev.Reason, Labels: ev.Labels})
		f, err := h.js.PublishAsync(historySubject(ev.Event, ev.Machine), b)
		if err != nil {
			h.failed.Add(1)
			h.log.Error("presence history entry not stored", "machine", ev.Machine, "event", ev.Event, "error", err)
			continue
		}
		futures = append(futures, f)
		if _, ok := last[ev.Machine]; !ok {
			order = append(order, ev.Machine)
		}
		last[ev.Machine] = ev
	}
	for _, id := range order {
		h.mu.Lock()
		rec, ok := h.seen[id]
		h.mu.Unlock()
		m := nats.NewMsg("$KV." + LastSeenBucket + "." + lastSeenKey(id))
		if ok {
			m.Data, _ = json.Marshal(rec)
		} else {
			m.Header.Set("KV-Operation", "DEL") // forgotten: a delete marker, as the KV client writes
		}
		f, err := h.js.PublishMsgAsync(m)
		if err != nil {
			h.failed.Add(1)
			h.log.Error("last-seen record not stored", "machine", id, "error", err)
			continue
		}
		futures = append(futures, f)
	}
	select {
	case <-h.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			h.failed.Add(1)
			h.log.Error("presence history write failed", "subject", f.Msg().Subject, "error", err)
		default:
			h.failed.Add(1)
			h.log.Error("presence history write not acknowledged in 30 s", "subject", f.Msg().Subject)
		}
	}
}

// close writes what is queued and stops.
func (h *historyLog) close() {
	h.closeOnce.Do(func() {
		close(h.quit)
		h.stopWatch()
	})
	h.done.Wait()
}

// query answers OpHistory.
func (h *historyLog) query(ctx context.Context, req fleet.HistoryRequest) (fleet.HistoryPage, error) {
	page, _, err := h.queryRead(ctx, req)
	return page, err
}

// historyReader reads the history for one request, counting what the
// broker sent it: what the request cost.
type historyReader struct {
	*historyLog
	// read counts the messages the broker sent (entries and statuses).
	read int
	// windows counts the windows a newest-first page looked into.
	windows int
}

// queryRead answers OpHistory and says how many messages the broker sent
// to answer it.
func (h *historyLog) queryRead(ctx context.Context, req fleet.HistoryRequest) (fleet.HistoryPage, int, error) {
	r := &historyReader{historyLog: h}
	page, err := r.query(ctx, req)
	return page, r.read, err
}

func (r *historyReader) query(ctx context.Context, req fleet.HistoryRequest) (fleet.HistoryPage, error) {
	page := fleet.HistoryPage{Entries: []fleet.HistoryEntry{}, RetentionSeconds: int64(r.cfg.Retention / time.Second), PerMachine: r.cfg.PerMachine}
	limit := req.Limit
	switch {
	case limit < 0 || limit > fleet.HistoryMaxLimit:
		return page, fleet.Errorf(fleet.CodeBadRequest, "limit %d is out of range; ask for 1 to %d entries (0 for %d)", limit, fleet.HistoryMaxLimit, historyDefaultLimit)
	case limit == 0:
		limit = historyDefaultLimit
	}
	if !req.Since.IsZero() && !req.Until.IsZero() && !req.Until.After(req.Since) {
		return page, fleet.Errorf(fleet.CodeBadRequest, "until (%s) must be after since (%s)", req.Until.Format(time.RFC3339), req.Since.Format(time.RFC3339))
	}
	filter := HistorySubjectPrefix + ">"
	if req.Machine != "" {
		if err := fleet.ValidateMachineID(req.Machine); err != nil {
			return page, fleet.Errorf(fleet.CodeBadRequest, "%v", err)
		}
		filter = HistorySubjectPrefix + "*." + fleet.MachineToken(req.Machine)
	}
	if r.js == nil {
		return page, fleet.Errorf(fleet.CodeUnavailable, "%s", r.unavailable)
	}
	info, err := r.streamState(ctx)
	if err != nil {
		return page, err
	}
	if info.Msgs == 0 {
		page.Trimmed = info.FirstSeq > 1
		return page, nil
	}
	if first, err := r.entryAt(ctx, info.FirstSeq); err == nil {
		page.Oldest = first.Time
	}
	// Sequences start at 1: a later first one was deleted.
	page.Trimmed = info.FirstSeq > 1
	if req.Machine != "" {
		// Its oldest went when it reached the per-machine bound.
		page.MachineTrimmed = r.machineFull(ctx, filter)
	}
	in := func(e fleet.HistoryEntry) bool {
		return e.Machine != "" && (req.Since.IsZero() || !e.Time.Before(req.Since)) && (req.Until.IsZero() || e.Time.Before(req.Until))
	}
	if !req.Newest {
		return r.forward(ctx, page, req, filter, limit, in)
	}
	return r.backward(ctx, page, req, filter, limit, info, in)
}

// forward reads oldest first, after req.Cursor (or from req.Since).
func (r *historyReader) forward(ctx context.Context, page fleet.HistoryPage, req fleet.HistoryRequest, filter string, limit int,
	in func(fleet.HistoryEntry) bool) (fleet.HistoryPage, error) {
	seq := req.Cursor + 1
	if req.Cursor == 0 && !req.Since.IsZero() {
		var err error
		if seq, err = r.seqAt(ctx, req.Since); err != nil {
			return page, err
		}
	}
	size := 0
	for {
		done := false
		n, pending, err := r.batch(ctx, seq, filter, min(limit-len(page.Entries)+1, historyWindow), func(e fleet.HistoryEntry, sz int) bool {
			seq = e.Seq + 1
			if !req.Until.IsZero() && !e.Time.Before(req.Until) {
				done = true
				return false
			}
			if !in(e) {
				return true
			}
			if len(page.Entries) == limit || size+sz > historyReplyBytes {
				page.More, done = true, true
				return false
			}
			page.Entries = append(page.Entries, e)
			page.Cursor = e.Seq
			size += sz
			return true
		})
		if err != nil {
			return page, err
		}
		if done || n == 0 || pending == 0 {
			return page, nil
		}
	}
}

// backward reads newest first, before req.Cursor (or the end), a window
// of sequence numbers at a time. A batched direct get filtered by subject
// does not stop at a sequence: asked for a window's entries of one
// machine, it would send that machine's next ones past the window too,
// for every window. So each window is first probed (its first matching
// entry and how many match from there on; the window holds that count
// less the one of the window after it) and only its own entries are read;
// a window of none is skipped, and past it one machine's history jumps
// straight to that machine's newest entry before it. A page reads about
// what it answers, plus two messages a window.
func (r *historyReader) backward(ctx context.Context, page fleet.HistoryPage, req fleet.HistoryRequest, filter string, limit int,
	info jetstream.StreamState, in func(fleet.HistoryEntry) bool) (fleet.HistoryPage, error) {
	end := info.LastSeq
	if !req.Until.IsZero() {
		at, err := r.seqAt(ctx, req.Until)
		if err != nil {
			return page, err
		}
		if at <= info.FirstSeq {
			return page, nil
		}
		end = min(end, at-1)
	}
	if req.Cursor > 0 {
		if req.Cursor <= info.FirstSeq {
			return page, nil
		}
		end = min(end, req.Cursor-1)
	}
	// above counts the matching entries after end.
	_, above, err := r.probe(ctx, end+1, filter)
	if err != nil {
		return page, err
	}
	size := 0
	for end >= info.FirstSeq {
		window := uint64(historyWindow)
		if req.Machine == "" {
			// Everyone's entries: a sequence number each (but those
			// deleted), no more are needed than the page lacks.
			window = uint64(min(historyWindow, limit-len(page.Entries)+1))
		}
		lo := info.FirstSeq
		if end-info.FirstSeq+1 > window {
			lo = end - window + 1
		}
		first, from, err := r.probe(ctx, lo, filter)
		if err != nil {
			return page, err
		}
		r.windows++
		var got []fleet.HistoryEntry
		var sizes []int
		older := false
		empty := first == 0 || first > end
		if !empty && from > above {
			// The window holds from-above matching entries (a few more
			// if some were written or deleted in between: past its end
			// the reading stops).
			want := int(min(from-above, historyWindow)) + historyReadSlack
			for seq := first; seq <= end; want = historyReadSlack {
				n, _, err := r.batch(ctx, seq, filter, want, func(e fleet.HistoryEntry, sz int) bool {
					if e.Seq > end {
						seq = end + 1
						return false
					}
					seq = e.Seq + 1
					if !req.Since.IsZero() && e.Time.Before(req.Since) {
						older = true
					}
					if in(e) {
						got, sizes = append(got, e), append(sizes, sz)
					}
					return true
				})
				if err != nil {
					return page, err
				}
				if n < want {
					break // all there is
				}
			}
		}
		above = from
		for i := len(got) - 1; i >= 0; i-- {
			if len(page.Entries) == limit || size+sizes[i] > historyReplyBytes {
				page.More = true
				return page, nil
			}
			page.Entries = append(page.Entries, got[i])
			page.Cursor = got[i].Seq
			size += sizes[i]
		}
		if older || lo == info.FirstSeq {
			return page, nil
		}
		end = lo - 1
		if empty && req.Machine != "" {
			// None of the machine's entries here: on to its newest before.
			newest, err := r.newestUpTo(ctx, end, filter)
			if err != nil {
				return page, err
			}
			if newest < info.FirstSeq {
				return page, nil
			}
			// Nothing of it in (newest, end]: above stays right.
			end = newest
		}
		if r.windows >= historyWindows || r.read >= historyReadBudget {
			// Read enough for one answer: the next page goes on from here.
			page.More, page.Cursor = true, end+1
			return page, nil
		}
	}
	return page, nil
}

func (h *historyLog) streamState(ctx context.Context) (jetstream.StreamState, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := h.js.Stream(cctx, HistoryStream)
	if err == nil {
		var info *jetstream.StreamInfo
		if info, err = s.Info(cctx); err == nil {
			return info.State, nil
		}
	}
	return jetstream.StreamState{}, fleet.Errorf(fleet.CodeUnavailable, "history stream %s: %v; try again shortly", HistoryStream, err)
}

// machineFull reports whether a subject of filter (one machine's joins,
// its leaves) holds the most entries kept per machine: its oldest have
// gone, or will with its next.
func (h *historyLog) machineFull(ctx context.Context, filter string) bool {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := h.js.Stream(cctx, HistoryStream)
	if err != nil {
		return false
	}
	info, err := s.Info(cctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return false
	}
	for _, n := range info.State.Subjects {
		if int64(n) >= h.cfg.PerMachine {
			return true
		}
	}
	return false
}

// seqAt finds the sequence of the first entry at or after t (the last
// sequence + 1: none), by a binary search on the entries' own times (in
// the order they were written): the stream's timestamps are the
// broker's clock, the entries' the control service's.
func (r *historyReader) seqAt(ctx context.Context, t time.Time) (uint64, error) {
	info, err := r.streamState(ctx)
	if err != nil {
		return 0, err
	}
	lo, hi := info.FirstSeq, info.LastSeq+1
	for lo < hi {
		mid := lo + (hi-lo)/2
		e, err := r.entryAt(ctx, mid)
		switch {
		case errors.Is(err, errNoEntry):
			hi = mid
		case err != nil:
			return 0, err
		case e.Time.Before(t):
			lo = e.Seq + 1
		default:
			hi = mid
		}
	}
	return lo, nil
}

var errNoEntry = errors.New("no history entry there")

// entryAt reads the entry with sequence seq, or the first after it.
func (r *historyReader) entryAt(ctx context.Context, seq uint64) (fleet.HistoryEntry, error) {
	var out fleet.HistoryEntry
	found := false
	_, _, err := r.batch(ctx, seq, HistorySubjectPrefix+">", 1, func(e fleet.HistoryEntry, _ int) bool {
		out, found = e, true
		return false
	})
	if err == nil && !found {
		err = errNoEntry
	}
	return out, err
}

// probe finds the first entry matching filter at or after seq: its
// sequence (0: none) and how many entries match from seq on.
func (r *historyReader) probe(ctx context.Context, seq uint64, filter string) (uint64, uint64, error) {
	var first uint64
	n, pending, err := r.batch(ctx, seq, filter, 1, func(e fleet.HistoryEntry, _ int) bool {
		first = e.Seq
		return true
	})
	if err != nil || n == 0 {
		return 0, 0, err
	}
	return first, 1 + pending, nil
}

// newestUpTo finds the newest entry matching filter (one machine's: its
// joins and leaves, two subjects) at or before seq: its sequence, 0 when
// none. The broker answers with the last entry of each subject up to
// seq, at most two messages.
func (r *historyReader) newestUpTo(ctx context.Context, seq uint64, filter string) (uint64, error) {
	var newest uint64
	err := r.get(ctx, map[string]any{"multi_last": []string{filter}, "up_to_seq": seq}, func(m *nats.Msg) bool {
		s, _ := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		newest = max(newest, s)
		return true
	}, nil)
	return newest, err
}

// batch reads up to n entries with a batched direct get (no consumer is
// created, so none is left behind): from sequence seq, matching filter
// ("": any). visit sees each until it returns false. It returns how many
// were read and how many matching entries follow the last read.
func (r *historyReader) batch(ctx context.Context, seq uint64, filter string, n int,
	visit func(e fleet.HistoryEntry, size int) bool) (int, uint64, error) {
	req := map[string]any{"batch": max(n, 1), "seq": max(seq, 1)}
	if filter != "" {
		req["next_by_subj"] = filter
	}
	read, stopped := 0, false
	var pending uint64
	err := r.get(ctx, req, func(m *nats.Msg) bool {
		read++
		if stopped {
			return true
		}
		s, _ := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		var e fleet.HistoryEntry
		if json.Unmarshal(m.Data, &e) != nil || e.Machine == "" {
			r.log.Warn("history entry unreadable; skipped", "seq", s)
			e = fleet.HistoryEntry{}
		}
		// An unreadable entry (no machine) is not shown, but it moves
		// the reader on.
		e.Seq = s
		if !visit(e, len(m.Data)) {
			stopped = true
		}
		return true
	}, &pending)
	return read, pending, err
}

// get sends a direct get request to the history stream and hands each
// message of the answer to each until the end of the answer (a 204 with
// how many matching entries follow, into pending when set) or none found
// (404). Every message counts in r.read.
func (r *historyReader) get(ctx context.Context, req map[string]any, each func(m *nats.Msg) bool, pending *uint64) error {
	sub, err := r.nc.SubscribeSync(r.nc.NewRespInbox())
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	b, _ := json.Marshal(req)
	if err := r.nc.PublishRequest("$JS.API.DIRECT.GET."+HistoryStream, sub.Subject, b); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	for {
		m, err := sub.NextMsg(readWait(ctx))
		if err != nil {
			return fleet.Errorf(fleet.CodeUnavailable, "history stream %s: reading: %v; try again shortly", HistoryStream, err)
		}
		r.read++
		switch m.Header.Get("Status") {
		case "404":
			return nil
		case "204":
			if pending != nil {
				*pending, _ = strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			}
			return nil
		case "":
			each(m)
		default:
			return fleet.Errorf(fleet.CodeUnavailable, "history stream %s: %s %s", HistoryStream, m.Header.Get("Status"), m.Header.Get("Description"))
		}
	}
}

// openHistory opens the presence history and hooks it to presence events.
func (s *Service) openHistory(ctx context.Context) error {
	h := newHistoryLog(s.ctl, s.log.With("component", "history"), s.cfg.History)
	h.now = s.cfg.Now
	if err := h.open(ctx, s.cfg.Audit.NotDurable); err != nil {
		return err
	}
	s.mu.Lock()
	s.history = h
	s.mu.Unlock()
	h.start()
	s.closers = append(s.closers, h.close, s.serveHistory(h))
	s.presence.onEvent = h.record
	return nil
}

// historyMetrics count the history's losses at scrape time.
func historyMetrics(s *Service) []prometheus.Collector {
	count := func(f func(h *historyLog) int64) func() float64 {
		return func() float64 {
			s.mu.Lock()
			h := s.history
			s.mu.Unlock()
			if h == nil {
				return 0
			}
			return float64(f(h))
		}
	}
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cc_history_events_dropped_total",
			Help: "Presence events left out of the history because its writer fell behind (queue full); last-seen in memory stays current."},
			count(func(h *historyLog) int64 { return h.dropped.Load() })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cc_history_writes_failed_total",
			Help: "History entries and last-seen records JetStream did not store (logged each)."},
			count(func(h *historyLog) int64 { return h.failed.Load() })),
	}
}

// apiHistory answers OpHistory, charging the operator's control limit
// for what the page read.
func (s *Service) apiHistory(ctx context.Context, op operatorIdentity, body []byte) (any, error) {
	var r fleet.HistoryRequest
	if len(body) > 0 {
		if err := decode(body, &r); err != nil {
			return nil, err
		}
	}
	if s.history == nil {
		return nil, fleet.Errorf(fleet.CodeUnavailable, "the presence history is not open")
	}
	page, read, err := s.history.queryRead(ctx, r)
	s.ctlLimit.charge(op.Key, read/historyReadsPerToken)
	return page, err
}

// historyJob is an admitted OpHistory request waiting to be answered.
type historyJob struct {
	req      micro.Request
	name     string
	h        apiHandler
	deadline time.Time
}

// historyEndpoint serves OpHistory from the history's fair queue (see
// historyWorkers); a request is admitted (reply subject, limit) on
// arrival, in the endpoint's own order.
func (s *Service) historyEndpoint(name string, h apiHandler) micro.HandlerFunc {
	return func(req micro.Request) {
		key, ok := s.admitAPI(req)
		if !ok {
			return
		}
		job := historyJob{req: req, name: name, h: h, deadline: time.Now().Add(apiTimeout)}
		if s.history == nil || s.history.work == nil {
			s.runHistoryJob(job)
			return
		}
		if !s.history.work.push(key, job) {
			sendError(s.fl, req.Reply(), fleet.Errorf(fleet.CodeTooManyRequests,
				"%d history requests of this operator are already waiting to be answered; retry in %v, when they are", historyWaiting, historyRetry), historyRetry)
		}
	}
}

// serveHistory starts the workers answering queued OpHistory requests;
// the returned func stops them (a request being answered is finished).
func (s *Service) serveHistory(h *historyLog) func() {
	h.work = newFairQueueOf[historyJob](historyWaiting, historyBusy)
	var wg sync.WaitGroup
	for range historyWorkers {
		wg.Go(func() {
			for {
				job, owner, ok := h.work.popOwner()
				if !ok {
					return
				}
				s.runHistoryJob(job)
				h.work.done(owner)
			}
		})
	}
	return func() {
		h.work.close()
		wg.Wait()
	}
}

// runHistoryJob answers job, unless it waited past its deadline.
func (s *Service) runHistoryJob(job historyJob) {
	if !time.Now().Before(job.deadline) {
		_ = job.req.Error(strconv.Itoa(fleet.CodeUnavailable),
			fmt.Sprintf("this history request waited over %v behind others and was not run; ask again", apiTimeout), nil)
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), job.deadline)
	defer cancel()
	s.answerAPI(ctx, job.name, job.req, job.h)
}

// seenOf is what machines.list shows of machine id's presence: ONLINE
// since it joined, last seen now; or what is remembered of it since it
// was registered (added): a record from before is of an earlier machine
// with that id, removed since (its record forgotten, or not yet).
func (s *Service) seenOf(id string, added time.Time) *fleet.Seen {
	var rec fleet.Seen
	known := false
	if s.history != nil {
		rec, known = s.history.seenOf(id)
		if known && !rec.Online && rec.LastSeen.Before(added) {
			rec, known = fleet.Seen{}, false
		}
	}
	if since, on := s.presence.state.onlineSince(id); on {
		if known && rec.Online && rec.Since.Before(since) {
			// ONLINE across a restart of the service: presence found it
			// again, the record knows when it joined.
			since = rec.Since
		}
		return &fleet.Seen{Online: true, Since: since, LastSeen: s.presence.clock().UTC(), Reason: rec.Reason}
	}
	if !known {
		return nil
	}
	rec.Online = false
	return &rec
}

// onlineSince reports whether machine id is ONLINE and since when.
func (p *presence) onlineSince(id string) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.machines[id]
	if !ok {
		return time.Time{}, false
	}
	return m.since, true
}
