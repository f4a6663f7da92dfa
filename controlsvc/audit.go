package controlsvc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The audit is three JetStream streams in the CONTROL account, file
// storage, one per log (fleet.AuditLogs), each with its own size and age
// limits, so that records of one kind cannot evict another's: a flood of
// calls (which any viewer can make) or of refused connections (which
// anybody can make) never evicts a registry change. Nobody in FLEET can
// reach them: that account has no JetStream and no import of it.
const (
	AuditStream        = "CC_AUDIT" // the changes log (and older records)
	AuditRefusedStream = "CC_AUDIT_REFUSED"
	AuditCallsStream   = "CC_AUDIT_CALLS"
	AuditSubjectPrefix = "cc.audit."
	// auditQueue bounds the records waiting to be written, per log; past
	// it they are counted as dropped (and a record says so), so a flood
	// never blocks the callout or the call watcher.
	auditQueue = 1 << 14
	// auditReplyBytes bounds one OpAudit reply (the broker's payload
	// limit is 1 MiB).
	auditReplyBytes = 768 << 10
	auditMaxLimit   = 10000
	// auditDropEvery is how often lost records are noted (one record per
	// operator and kind that lost some).
	auditDropEvery = time.Second
	// maxDropTallies bounds the operators tallied apart; the others are
	// tallied together.
	maxDropTallies = 1000
)

// Audit retention defaults: 1 GiB in all, as before the logs were split.
const (
	DefaultAuditMaxBytes        = 192 << 20
	DefaultAuditRefusedMaxBytes = 64 << 20
	DefaultAuditRefusedMaxAge   = 30 * 24 * time.Hour
	DefaultAuditCallsMaxBytes   = 768 << 20
	DefaultAuditCallsMaxAge     = 90 * 24 * time.Hour
)

// AuditLimits bound one audit log: the oldest records go first past
// MaxBytes, and records older than MaxAge (0: no age limit) go too.
type AuditLimits struct {
	MaxBytes int64
	MaxAge   time.Duration
}

// AuditConfig configures the audit logs.
type AuditConfig struct {
	// Changes, Refused and Calls bound each log (MaxBytes zero: the
	// default; MaxAge zero: no age limit; cc-control's flags default to
	// the Default*MaxAge ages).
	Changes, Refused, Calls AuditLimits
	// NotDurable lets the service start when the audit streams cannot be
	// created (no JetStream, or not enough space): records then go to the
	// service's log only. Without it the service refuses to start.
	NotDurable bool
}

func (c *AuditConfig) fill() {
	if c.Changes.MaxBytes <= 0 {
		c.Changes.MaxBytes = DefaultAuditMaxBytes
	}
	if c.Refused.MaxBytes <= 0 {
		c.Refused.MaxBytes = DefaultAuditRefusedMaxBytes
	}
	if c.Calls.MaxBytes <= 0 {
		c.Calls.MaxBytes = DefaultAuditCallsMaxBytes
	}
}

// auditLogDef is one log: its stream, subjects and limits.
type auditLogDef struct {
	name, stream, about, flag string
	limits                    AuditLimits
}

func (c AuditConfig) logs() []auditLogDef {
	return []auditLogDef{
		{fleet.AuditLogChanges, AuditStream, "registry and operator changes, lost-record notes", "--audit-max-bytes", c.Changes},
		{fleet.AuditLogRefused, AuditRefusedStream, "refused connections and refused control operations", "--audit-refused-max-bytes", c.Refused},
		{fleet.AuditLogCalls, AuditCallsStream, "function calls", "--audit-calls-max-bytes", c.Calls},
	}
}

const (
	logChanges = iota
	logRefused
	logCalls
)

// logOf is the log record r belongs in.
func logOf(r fleet.AuditRecord) int {
	switch {
	case r.Kind == fleet.AuditCall:
		return logCalls
	case r.Kind == fleet.AuditRefused, r.Kind == fleet.AuditRegistry && r.Error != "":
		return logRefused
	}
	return logChanges
}

// auditLog writes audit records to the streams, one goroutine per log, in
// order. With NotDurable and no stream, records go to the service's log.
type auditLog struct {
	log    *slog.Logger
	nc     *nats.Conn
	js     jetstream.JetStream // nil: not durable
	defs   []auditLogDef
	now    func() time.Time
	queues [3]chan auditItem
	// replica and instance name this replica on the records it writes
	// (headers ReplicaHeader, InstanceHeader; callhandover.go).
	replica, instance string
	// onDrop and onSlow feed the metrics.
	onDrop func(log string, n int)
	onSlow func()

	// foldMu guards folds, the open records of repeated refusals
	// (audit_fold.go), counted over foldWindow.
	foldMu     sync.Mutex
	folds      map[foldKey]*foldState
	foldWindow time.Duration

	mu          sync.Mutex
	drops       map[dropKey]*dropTally
	dropped     atomic.Int64
	slowEvents  atomic.Int64
	quit        chan struct{}
	writers     sync.WaitGroup
	noter       sync.WaitGroup
	once        sync.Once
	unavailable string // why the audit cannot be read
}

// auditItem is a record queued, with its call key ("": none; a call
// record's, callhandover.go).
type auditItem struct {
	rec     fleet.AuditRecord
	callKey string
}

type dropKey struct {
	log   int
	kind  string
	opKey string
	// why: losses for other reasons are noted apart.
	why string
}

type dropTally struct {
	operator    string
	n           int64
	first, last time.Time
	reason      string
}

// ErrAuditNotDurable is returned (wrapped) by Start when the audit
// streams cannot be created and AuditConfig.NotDurable is not set.
var ErrAuditNotDurable = errors.New("the audit log cannot be made durable")

// storeInfo describes the JetStream store the audit goes to, for the
// error saying why it could not be reserved.
type storeInfo struct {
	dir                 string // "" when unknown (an external broker)
	maxStore, reserved  int64  // the server's JetStream limit and reservations; -1 unknown
	free                int64  // free bytes on the volume of dir; -1 unknown
	where               string // how to name the broker
	clustered, noStream bool
}

// newAuditLog builds an audit log that is not started: the streams are not
// created and nothing is written until open and start.
func newAuditLog(nc *nats.Conn, log *slog.Logger, cfg AuditConfig) *auditLog {
	cfg.fill()
	a := &auditLog{log: log, nc: nc, defs: cfg.logs(), now: time.Now, drops: map[dropKey]*dropTally{},
		folds: map[foldKey]*foldState{}, foldWindow: auditFoldWindow,
		quit: make(chan struct{}), onDrop: func(string, int) {}, onSlow: func() {}}
	for i := range a.queues {
		a.queues[i] = make(chan auditItem, auditQueue)
	}
	return a
}

// open creates (or updates) the streams. When that fails it returns an
// error saying why and what to do, unless notDurable: then it logs that
// the audit is not durable and records go to the log.
func (a *auditLog) open(ctx context.Context, notDurable bool, store func() storeInfo) error {
	js, err := jetstream.New(a.nc)
	var failed auditLogDef
	if err == nil {
		for _, d := range a.defs {
			// Three copies on a JetStream cluster of three, like the
			// registry (jsreplicas.go); one on a single broker.
			_, err = createReplicated(a.log, "stream "+d.stream, func(replicas int) error {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				_, err := js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{
					Name:        d.stream,
					Description: "commandcontrol audit log: " + d.about,
					Subjects:    []string{AuditSubjectPrefix + d.name + ".>"},
					Storage:     jetstream.FileStorage,
					Retention:   jetstream.LimitsPolicy,
					Discard:     jetstream.DiscardOld,
					MaxBytes:    d.limits.MaxBytes,
					MaxAge:      d.limits.MaxAge,
					AllowDirect: true,
					Replicas:    replicas,
				})
				return err
			})
			if err != nil {
				failed = d
				break
			}
		}
	}
	if err == nil {
		a.js = js
		return nil
	}
	why := a.whyNotDurable(failed, err, store())
	a.unavailable = "the audit log is not durable here (cc-control runs with --no-durable-audit): " + why + "; records are in cc-control's log"
	if !notDurable {
		return fmt.Errorf("%w: %s. Run with --no-durable-audit to start without a durable audit (records then go to cc-control's log only)", ErrAuditNotDurable, why)
	}
	a.log.Warn("the audit log is NOT durable (--no-durable-audit): records go to this log only", "why", why)
	return nil
}

// whyNotDurable says why creating stream d failed: what the audit needs,
// what the store has, and where.
func (a *auditLog) whyNotDurable(d auditLogDef, err error, st storeInfo) string {
	if d.stream == "" || errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || st.noStream {
		switch {
		case st.clustered:
			return fmt.Sprintf("the embedded broker is clustered and has no JetStream (%v)", err)
		case st.dir == "":
			return fmt.Sprintf("%s has no JetStream for the CONTROL account: start cc-broker with --store-dir (%v)", st.where, err)
		}
		return fmt.Sprintf("JetStream in %s is not available (%v)", st.dir, err)
	}
	var need int64
	parts := ""
	for _, l := range a.defs {
		need += l.limits.MaxBytes
		if parts != "" {
			parts += " + "
		}
		parts += fmt.Sprintf("%s %s (%s)", l.name, byteText(l.limits.MaxBytes), l.flag)
	}
	msg := fmt.Sprintf("stream %s (%s log) was refused by %s: %v; the audit reserves %s in all: %s",
		d.stream, d.name, st.where, err, byteText(need), parts)
	if st.dir != "" {
		msg += fmt.Sprintf("; the JetStream store is %s", st.dir)
		if st.free >= 0 {
			msg += fmt.Sprintf(", %s free on its volume", byteText(st.free))
		}
		if st.maxStore > 0 {
			msg += fmt.Sprintf(", of which JetStream may reserve %s", byteText(st.maxStore))
			if st.reserved > 0 {
				msg += fmt.Sprintf(" (%s reserved already)", byteText(st.reserved))
			}
		}
		msg += "; free space there, give --data a larger volume, or lower the sizes"
	} else {
		msg += "; give the broker's --store-dir more space or lower the sizes"
	}
	return msg
}

// byteText renders n bytes for people: 1.5 GiB, 768 MiB, 12 KiB, 100 B.
func byteText(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// start begins writing.
func (a *auditLog) start() {
	for i := range a.queues {
		a.writers.Add(1)
		go a.run(i)
	}
	a.noter.Add(1)
	go func() {
		defer a.noter.Done()
		t := time.NewTicker(auditDropEvery)
		defer t.Stop()
		for {
			select {
			case <-a.quit:
				return
			case <-t.C:
				a.flushFolds(false)
				a.noteDrops()
			}
		}
	}()
}

// record queues r; it never blocks. A record that does not fit is
// counted, per log, kind and operator, and noted (noteDrops).
func (a *auditLog) record(r fleet.AuditRecord) { a.recordCall(r, "") }

// recordCall is record for a call record with its call key (callKey),
// written beside it for the other replicas (callhandover.go).
func (a *auditLog) recordCall(r fleet.AuditRecord, callKey string) {
	now := a.now().UTC()
	if r.Time.IsZero() {
		r.Time = now
	}
	l := logOf(r)
	select {
	case a.queues[l] <- auditItem{r, callKey}:
	default:
		a.drop(l, r.Kind, r.Operator, r.OperatorKey, "the audit writer fell behind (queue full)", 1, now)
	}
}

// drop tallies n lost records.
func (a *auditLog) drop(l int, kind, operator, opKey, reason string, n int64, now time.Time) {
	a.dropTally(l, kind, operator, opKey, reason, n, now, now)
}

// dropSpan tallies n records of kind lost from the log from first to
// last, for reason (noted apart from the other losses of that kind).
func (a *auditLog) dropSpan(l int, kind, reason string, n int64, first, last time.Time) {
	a.dropTally(l, kind, "", "", reason, n, first, last)
}

func (a *auditLog) dropTally(l int, kind, operator, opKey, reason string, n int64, first, now time.Time) {
	a.dropped.Add(n)
	a.onDrop(a.defs[l].name, int(n))
	a.mu.Lock()
	defer a.mu.Unlock()
	k := dropKey{l, kind, opKey, reason}
	t := a.drops[k]
	if t == nil {
		if len(a.drops) >= maxDropTallies {
			k.opKey, operator = "", "(several)"
			t = a.drops[k]
		}
		if t == nil {
			t = &dropTally{operator: operator, first: first, reason: reason}
			a.drops[k] = t
		}
	}
	t.n += n
	t.last = now
}

// slowConsumer is told that a subscription of the call watcher overflowed:
// the broker's messages on subject were dropped before the watcher saw
// them (total so far: dropped). It is counted, logged and noted.
func (a *auditLog) slowConsumer(subject string, dropped int) {
	a.slowEvents.Add(1)
	a.log.Warn("call watcher is a slow consumer: messages dropped, calls may be missing from the audit",
		"subject", subject, "dropped_total", dropped)
	a.drop(logCalls, "slow-consumer", "", "", "the call watcher's subscription on "+subject+
		" overflowed (slow consumer); calls and replies it missed are not recorded", 1, a.now().UTC())
	// Counted once noted: whoever reads the metric and then closes the
	// log finds the note written.
	a.onSlow()
}

// noteDrops writes one record per tally of lost records (to the changes
// log, which a flood cannot evict) and logs it.
func (a *auditLog) noteDrops() {
	a.mu.Lock()
	drops := a.drops
	a.drops = map[dropKey]*dropTally{}
	a.mu.Unlock()
	keys := make([]dropKey, 0, len(drops))
	for k := range drops {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return drops[keys[i]].first.Before(drops[keys[j]].first) })
	for _, k := range keys {
		t := drops[k]
		what := "records"
		if k.kind == "slow-consumer" {
			what = "slow-consumer events"
		}
		r := fleet.AuditRecord{Time: t.last, Kind: fleet.AuditDropped, Operator: t.operator, OperatorKey: k.opKey,
			Dropped: int(t.n), DroppedKind: k.kind, DroppedSince: t.first,
			Reason: fmt.Sprintf("%d %s %s lost from the %s log: %s", t.n, k.kind, what, a.defs[k.log].name, t.reason)}
		a.log.Warn("audit records lost", "log", a.defs[k.log].name, "kind", k.kind, "operator", t.operator,
			"operator_key", k.opKey, "count", t.n, "from", t.first, "to", t.last, "reason", t.reason)
		a.write(logChanges, auditItem{rec: r})
	}
}

func (a *auditLog) run(l int) {
	defer a.writers.Done()
	for it := range a.queues[l] {
		a.write(l, it)
	}
}

func (a *auditLog) write(l int, it auditItem) {
	r := it.rec
	b, err := json.Marshal(r)
	if err != nil {
		a.log.Error("audit record not encodable", "kind", r.Kind, "error", err)
		return
	}
	if a.js == nil {
		a.log.Info("audit", "log", a.defs[l].name, "record", string(b))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m := &nats.Msg{Subject: AuditSubjectPrefix + a.defs[l].name + "." + r.Kind, Data: b}
	if it.callKey != "" {
		m.Header = nats.Header{CallKeyHeader: {it.callKey}, ReplicaHeader: {a.replica}, InstanceHeader: {a.instance}}
	}
	if _, err := a.js.PublishMsg(ctx, m); err != nil {
		a.log.Error("audit record not stored; logged instead", "error", err, "record", string(b))
	}
}

// close writes what is queued, notes what was lost, and stops.
func (a *auditLog) close() {
	a.once.Do(func() {
		close(a.quit)
		a.noter.Wait()
		a.flushFolds(true)
		for _, q := range a.queues {
			close(q)
		}
	})
	a.writers.Wait()
	a.noteDrops()
}

// auditEntry is one record read back, or one skipped (before Since).
type auditEntry struct {
	seq  uint64
	size int
	rec  fleet.AuditRecord
	keep bool
}

// query reads records matching req, the logs merged oldest first.
func (a *auditLog) query(ctx context.Context, req fleet.AuditRequest) (fleet.AuditList, error) {
	out := fleet.AuditList{Records: []fleet.AuditRecord{}}
	if a.js == nil {
		return out, fleet.Errorf(fleet.CodeUnavailable, "%s", a.unavailable)
	}
	limit := req.Limit
	if limit <= 0 || limit > auditMaxLimit {
		limit = auditMaxLimit
	}
	var defs []auditLogDef
	for _, d := range a.defs {
		if len(req.Logs) == 0 || slices.Contains(req.Logs, d.name) {
			defs = append(defs, d)
		}
	}
	for _, name := range req.Logs {
		if !slices.Contains(fleet.AuditLogs, name) {
			return out, fleet.Errorf(fleet.CodeBadRequest, "audit log %q: want one of %v", name, fleet.AuditLogs)
		}
	}
	if req.Newest {
		return a.queryNewest(ctx, defs, req.Since, limit)
	}
	entries := make([][]auditEntry, len(defs))
	pending := make([]uint64, len(defs))
	for i, d := range defs {
		var err error
		if entries[i], pending[i], err = a.readLog(ctx, d.stream, req.After[d.name], req.Since, limit); err != nil {
			return out, err
		}
	}
	// Merge: take the oldest head until the limit or the size budget.
	pos := make([]int, len(defs))
	next := make([]uint64, len(defs))
	for i, d := range defs {
		next[i] = req.After[d.name]
	}
	size := 0
	skip := func(i int) {
		for pos[i] < len(entries[i]) && !entries[i][pos[i]].keep {
			next[i] = entries[i][pos[i]].seq
			pos[i]++
		}
	}
	for {
		best := -1
		for i := range defs {
			skip(i)
			if pos[i] < len(entries[i]) && (best < 0 || entries[i][pos[i]].rec.Time.Before(entries[best][pos[best]].rec.Time)) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		e := entries[best][pos[best]]
		if len(out.Records) == limit || size+e.size > auditReplyBytes {
			out.More = true
			break
		}
		out.Records = append(out.Records, e.rec)
		size += e.size
		next[best] = e.seq
		pos[best]++
	}
	for i, d := range defs {
		skip(i)
		if pos[i] < len(entries[i]) || pending[i] > 0 {
			out.More = true
		}
		if next[i] > 0 {
			if out.Next == nil {
				out.Next = map[string]uint64{}
			}
			out.Next[d.name] = next[i]
		}
	}
	return out, nil
}

// readLog reads up to limit records of stream (and those it skips, older
// than since) after sequence after (0: from since, or the start), within
// the reply's size budget, with batched direct gets: no consumer is
// created, so none is left behind. pending is how many remain after the
// last one read.
func (a *auditLog) readLog(ctx context.Context, stream string, after uint64, since time.Time, limit int) ([]auditEntry, uint64, error) {
	sub, err := a.nc.SubscribeSync(a.nc.NewRespInbox())
	if err != nil {
		return nil, 0, fmt.Errorf("audit stream %s: %w", stream, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	var out []auditEntry
	kept, size := 0, 0
	seq := after + 1
	first := true
	for {
		batch := min(limit-kept+1, 1000)
		req := map[string]any{"batch": batch, "max_bytes": max(auditReplyBytes-size, 1)}
		if first && after == 0 && !since.IsZero() {
			req["start_time"] = since
		} else {
			req["seq"] = seq
		}
		first = false
		b, _ := json.Marshal(req)
		if err := a.nc.PublishRequest("$JS.API.DIRECT.GET."+stream, sub.Subject, b); err != nil {
			return out, 0, fmt.Errorf("audit stream %s: %w", stream, err)
		}
		got := 0
		for {
			m, err := sub.NextMsg(readWait(ctx))
			if err != nil {
				return out, 0, fmt.Errorf("audit stream %s: reading: %w", stream, err)
			}
			switch m.Header.Get("Status") {
			case "404":
				return out, 0, nil
			case "204":
				np, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
				if np == 0 || kept > limit || size >= auditReplyBytes || got == 0 {
					return out, np, nil
				}
			case "":
				got++
				s, _ := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
				seq = s + 1
				e := auditEntry{seq: s, size: len(m.Data)}
				if json.Unmarshal(m.Data, &e.rec) == nil && (since.IsZero() || !e.rec.Time.Before(since)) {
					e.keep = true
					e.rec.Seq = s
					e.rec.Log = logName(stream)
					kept++
					size += len(m.Data)
				}
				out = append(out, e)
				continue
			default:
				return out, 0, fmt.Errorf("audit stream %s: %s %s", stream, m.Header.Get("Status"), m.Header.Get("Description"))
			}
			break
		}
	}
}

// queryNewest answers a request with Newest: the newest limit records
// of defs at or after since, within the reply's size budget, oldest
// first; More says older ones match.
func (a *auditLog) queryNewest(ctx context.Context, defs []auditLogDef, since time.Time, limit int) (fleet.AuditList, error) {
	out := fleet.AuditList{Records: []fleet.AuditRecord{}}
	var all []auditEntry
	for _, d := range defs {
		es, older, err := a.readTail(ctx, d.stream, since, limit)
		if err != nil {
			return out, err
		}
		out.More = out.More || older
		all = append(all, es...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].rec.Time.Before(all[j].rec.Time) })
	if len(all) > limit {
		all, out.More = all[len(all)-limit:], true
	}
	size := 0
	for _, e := range all {
		size += e.size
	}
	for len(all) > 0 && size > auditReplyBytes {
		size -= all[0].size
		all, out.More = all[1:], true
	}
	for _, e := range all {
		out.Records = append(out.Records, e.rec)
	}
	return out, nil
}

// readTail reads the newest limit records of stream at or after since
// (at most the reply's size budget of them), oldest first, and whether
// older records at or after since are left out. It reads limit+1 from
// the end, with batched direct gets: no consumer is left behind.
func (a *auditLog) readTail(ctx context.Context, stream string, since time.Time, limit int) ([]auditEntry, bool, error) {
	st, err := a.js.Stream(ctx, stream)
	if err != nil {
		return nil, false, fmt.Errorf("audit stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("audit stream %s: %w", stream, err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 || last < first {
		return nil, false, nil
	}
	lo := first
	if last-first > uint64(limit) {
		lo = last - uint64(limit)
	}
	sub, err := a.nc.SubscribeSync(a.nc.NewRespInbox())
	if err != nil {
		return nil, false, fmt.Errorf("audit stream %s: %w", stream, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	var kept []auditEntry
	older, size := false, 0
	for seq := lo; seq <= last; {
		b, _ := json.Marshal(map[string]any{"seq": seq, "batch": min(last-seq+1, 1000), "max_bytes": 4 * auditReplyBytes})
		if err := a.nc.PublishRequest("$JS.API.DIRECT.GET."+stream, sub.Subject, b); err != nil {
			return nil, false, fmt.Errorf("audit stream %s: %w", stream, err)
		}
		got := 0
	batch:
		for {
			m, err := sub.NextMsg(readWait(ctx))
			if err != nil {
				return nil, false, fmt.Errorf("audit stream %s: reading: %w", stream, err)
			}
			switch m.Header.Get("Status") {
			case "404":
				seq = last + 1
				break batch
			case "204":
				break batch
			case "":
				got++
				n, _ := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
				seq = n + 1
				if n > last {
					continue
				}
				e := auditEntry{seq: n, size: len(m.Data)}
				if json.Unmarshal(m.Data, &e.rec) != nil || (!since.IsZero() && e.rec.Time.Before(since)) {
					continue
				}
				e.rec.Seq, e.rec.Log = n, logName(stream)
				kept = append(kept, e)
				size += e.size
				for size > auditReplyBytes && len(kept) > 1 {
					size -= kept[0].size
					kept, older = kept[1:], true
				}
			default:
				return nil, false, fmt.Errorf("audit stream %s: %s %s", stream, m.Header.Get("Status"), m.Header.Get("Description"))
			}
		}
		if got == 0 {
			break
		}
	}
	if len(kept) > limit {
		kept, older = kept[len(kept)-limit:], true
	}
	return kept, older, nil
}

// readWait bounds the wait for one message of a direct get: 5 s, less
// when ctx ends sooner.
func readWait(ctx context.Context) time.Duration {
	d := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		d = max(min(d, time.Until(dl)), time.Millisecond)
	}
	return d
}

func logName(stream string) string {
	switch stream {
	case AuditCallsStream:
		return fleet.AuditLogCalls
	case AuditRefusedStream:
		return fleet.AuditLogRefused
	}
	return fleet.AuditLogChanges
}

// truncateJSON keeps body as JSON when it is valid and short enough, and
// otherwise records it as a JSON string cut to max bytes.
func truncateJSON(body []byte, max int) json.RawMessage {
	if len(body) == 0 {
		return nil
	}
	if len(body) <= max && json.Valid(body) {
		return json.RawMessage(append([]byte(nil), body...))
	}
	s := string(body)
	if len(s) > max {
		s = s[:max] + "…(truncated)"
	}
	b, _ := json.Marshal(s)
	return b
}

// boundBody is body as an audit record keeps it: whole when it is at most
// max bytes, otherwise cut, with the whole's size and SHA-256 in cut.
func boundBody(body []byte, max int) (json.RawMessage, *fleet.AuditCut) {
	if len(body) <= max {
		return truncateJSON(body, max), nil
	}
	sum := sha256.Sum256(body)
	return truncateJSON(body, max), &fleet.AuditCut{Size: len(body), SHA256: hex.EncodeToString(sum[:])}
}

// setCallArgs puts a call's arguments in rec, bounded to
// fleet.AuditMaxCallArgs bytes (the call watcher calls it).
func setCallArgs(rec *fleet.AuditRecord, body []byte) {
	rec.Args, rec.Cut = boundBody(body, fleet.AuditMaxCallArgs)
}

// auditRefused records a connection the callout refused.
func (s *Service) auditRefused(kind, name, key, ip, reason string) {
	s.auditRefusedAt(kind, name, key, ip, "", reason)
}

// auditRefusedAt records a connection the callout refused when remote
// site's broker asked about it ("": the hub's own brokers).
func (s *Service) auditRefusedAt(kind, name, key, ip, site, reason string) {
	if s.audit == nil {
		return
	}
	s.audit.refused(fleet.AuditRecord{Kind: fleet.AuditRefused, Name: name, Key: key, IP: ip, Site: site, Reason: kind + ": " + reason})
}

// auditRegistry records a control API change (or a refused attempt).
// note says what it did beyond the request ("" when nothing).
func (s *Service) auditRegistry(op operatorIdentity, name string, body []byte, err error, note string) {
	if s.audit == nil {
		return
	}
	req, cut := boundBody(body, fleet.AuditMaxArgs)
	s.audit.record(fleet.AuditRecord{Kind: fleet.AuditRegistry, Operator: op.Name, OperatorKey: op.Key,
		Op: name, Request: req, Cut: cut, Note: note, Error: errString(err)})
}

// callsAsyncError is the calls connection's error handler: a slow
// consumer (the call watcher's subscriptions overflowed) is counted,
// logged and noted in the audit; anything else is logged.
func (s *Service) callsAsyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	s.mu.Lock()
	a := s.audit
	s.mu.Unlock()
	if errors.Is(err, nats.ErrSlowConsumer) && sub != nil && a != nil {
		n, _ := sub.Dropped()
		a.slowConsumer(sub.Subject, n)
		return
	}
	s.log.Error("calls connection", "error", err)
}

// apiAudit answers OpAudit.
func (s *Service) apiAudit(ctx context.Context, _ operatorIdentity, body []byte) (any, error) {
	var r fleet.AuditRequest
	if len(body) > 0 {
		if err := decode(body, &r); err != nil {
			return nil, err
		}
	}
	if s.audit == nil {
		return nil, fleet.Errorf(fleet.CodeUnavailable, "the audit log is not open")
	}
	return s.audit.query(ctx, r)
}

// auditStore describes where the audit streams go, for the error saying
// why they could not be created.
func (s *Service) auditStore() storeInfo {
	st := storeInfo{maxStore: -1, reserved: -1, free: -1, where: "the broker at " + s.url}
	if s.broker == nil {
		return st
	}
	st.where = "the embedded broker"
	srv := s.broker.Server()
	jc := srv.JetStreamConfig()
	if jc == nil {
		st.noStream = true
		st.clustered = s.cfg.Broker.ClusterListen != ""
		return st
	}
	st.dir, st.maxStore = jc.StoreDir, jc.MaxStore
	if _, r, err := srv.JetStreamReservedResources(); err == nil {
		st.reserved = r
	}
	st.free = freeBytes(jc.StoreDir)
	return st
}
