package controlsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The registry in JetStream: the KV bucket RegistryBucket in the CONTROL
// account, one key per entry (machine.<id>, operator.<name>, app.<name>,
// deny.<entry>, meta.<…>), the value the fleet type's JSON, and the pending machines
// in the bucket PendingBucket (pending.<id>): strangers make those up at
// the callout's rate, so their bucket is bounded in messages and bytes
// and drops its oldest when full, and the registry's own is bounded in
// bytes (RegistryMaxBytes) and refuses writes past it. Every replica
// of the control service keeps the whole registry in memory and watches
// the bucket, so a change through one replica reaches every other within
// milliseconds. Only the control service reaches the bucket: FLEET has no
// JetStream and no import of CONTROL's.

// RegistryBucket is the registry's KV bucket.
const RegistryBucket = "cc_registry"

// PendingBucket is the pending machines' KV bucket.
const PendingBucket = "cc_pending"

const (
	// RegistryMaxBytes bounds the registry bucket: some 500,000 entries
	// (and the markers of deleted ones); past it a change is refused,
	// never an entry dropped.
	RegistryMaxBytes = 256 << 20
	// pendingMaxMsgs bounds the pending bucket's messages: MaxPending
	// entries and as many markers of dropped ones (each kept
	// pendingMarkerTTL); past it the oldest go.
	pendingMaxMsgs = 2 * MaxPending
	// pendingMaxValue bounds one pending entry (MaxPendingKeys keys).
	pendingMaxValue = 16 << 10
	// pendingMaxBytes bounds the pending bucket's bytes.
	pendingMaxBytes = 64 << 20
)

const (
	// kvTimeout bounds one request to the bucket.
	kvTimeout = 5 * time.Second
	// pendingMarkerTTL is how long the bucket keeps the marker of a
	// deleted pending entry: pending entries come and go at the rate
	// strangers knock, and their markers must not pile up for ever.
	// (Deleted machines, operators and apps keep theirs: a replica
	// whose watcher was cut off for longer still sees them go.)
	pendingMarkerTTL = time.Hour
	// kvOpHeader and its values mark deletes in a KV bucket.
	kvOpHeader = "KV-Operation"
	kvOpDel    = "DEL"
	kvOpPurge  = "PURGE"
	// maxKVKeyLen bounds a bucket key, well under the broker's control
	// line (4 KiB, the subject with its reply and headers' sizes): the
	// longest id any kind allows, every byte encoded, fits.
	maxKVKeyLen = 1024
)

// kvStore is the registry's bucket and the watcher that applies other
// replicas' changes to memory.
type kvStore struct {
	// bucket is the bucket's name; pending, in the registry's store, is
	// the store of PendingBucket (pending entries are read and written
	// there), and pendingOnly is set in that store.
	bucket      string
	pending     *kvStore
	pendingOnly bool
	js          jetstream.JetStream
	kv          jetstream.KeyValue
	stream      jetstream.Stream
	log         *slog.Logger
	replicas    int
	stop        context.CancelFunc
	// follower applies the bucket's changes after load (kvfollow.go);
	// rewatchNow starts its watch again at once (rewatch).
	follower   *kvFollower
	rewatchNow chan struct{}
	nc         *nats.Conn
	// watchCtx and watcher are the watch load leaves for the follower.
	watchCtx context.Context
	watcher  jetstream.KeyWatcher
}

// entryKey is the bucket key of entry kind/id.
func entryKey(kind, id string) string { return kind + "." + encodeKeyPart(id) }

// encodeKeyPart spells s with the characters a KV key allows in one
// token: letters, digits, '-' and '_' stand for themselves, every other
// byte is =XX (hex). It is reversible (decodeKeyPart).
func encodeKeyPart(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteString(strings.ToUpper(strconv.FormatUint(uint64(c)|0x100, 16)[1:]))
	}
	return b.String()
}

// decodeKeyPart undoes encodeKeyPart.
func decodeKeyPart(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("key part %q: = is not followed by two hex digits", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("key part %q: = is not followed by two hex digits", s)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}

// parseEntryKey splits a bucket key into its kind and id.
func parseEntryKey(key string) (kind, id string, err error) {
	kind, enc, ok := strings.Cut(key, ".")
	if !ok || enc == "" {
		return "", "", fmt.Errorf("key %q is not <kind>.<id>", key)
	}
	id, err = decodeKeyPart(enc)
	return kind, id, err
}

// decodeEntry decodes and checks the value of entry kind/id.
func decodeEntry(kind, id string, b []byte) (any, error) {
	var d registryData
	d.fill()
	var err error
	switch kind {
	case kindMachine:
		var m fleet.Machine
		if err = json.Unmarshal(b, &m); err == nil {
			d.Machines[id] = &m
		}
	case kindPending:
		var p fleet.Pending
		if err = json.Unmarshal(b, &p); err == nil {
			if err := validatePending(id, &p); err != nil {
				return nil, err
			}
			return &p, nil
		}
	case kindOperator:
		var o fleet.Operator
		if err = json.Unmarshal(b, &o); err == nil {
			d.Operators[id] = &o
		}
	case kindApp:
		var a fleet.App
		if err = json.Unmarshal(b, &a); err == nil {
			d.Apps[id] = &a
		}
	case kindDeny:
		var x fleet.Denied
		if err = json.Unmarshal(b, &x); err == nil {
			d.Denied[id] = &x
		}
	default:
		return nil, fmt.Errorf("unknown kind %q", kind)
	}
	if err != nil {
		return nil, err
	}
	if err := d.validate(); err != nil {
		return nil, err
	}
	return d.value(kind, id), nil
}

// value is entry kind/id of d, or nil.
func (d *registryData) value(kind, id string) any {
	r := Registry{data: *d}
	return r.valueLocked(kind, id)
}

// isConflict reports whether err is a compare-and-set write refused
// because the entry's revision moved on.
func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// openKVStore creates (or finds) the registry's bucket, with three
// replicas where the brokers can place them.
func openKVStore(ctx context.Context, nc *nats.Conn, log *slog.Logger) (*kvStore, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	s := &kvStore{bucket: RegistryBucket, js: js, log: log}
	s.replicas, err = createReplicated(log, "KV bucket "+RegistryBucket, func(n int) error {
		cctx, cancel := context.WithTimeout(ctx, 2*kvTimeout)
		defer cancel()
		kv, err := js.CreateOrUpdateKeyValue(cctx, jetstream.KeyValueConfig{
			Bucket:      RegistryBucket,
			Description: "commandcontrol registry: machines, operators, apps",
			Storage:     jetstream.FileStorage,
			Replicas:    n,
			MaxBytes:    RegistryMaxBytes,
			// Per-message TTLs (the markers of pending entries an
			// earlier version kept here).
			LimitMarkerTTL: pendingMarkerTTL,
		})
		s.kv = kv
		return err
	})
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	if s.stream, err = js.Stream(cctx, "KV_"+RegistryBucket); err != nil {
		return nil, err
	}
	return s, nil
}

// openPendingStore creates (or finds) the pending machines' bucket: a KV
// bucket's stream, made here because a KV bucket cannot drop its oldest
// messages (DiscardOld) nor bound their number.
func openPendingStore(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*kvStore, error) {
	s := &kvStore{bucket: PendingBucket, pendingOnly: true, js: js, log: log}
	var err error
	s.replicas, err = createReplicated(log, "KV bucket "+PendingBucket, func(n int) error {
		cctx, cancel := context.WithTimeout(ctx, 2*kvTimeout)
		defer cancel()
		st, err := js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{
			Name:              "KV_" + PendingBucket,
			Description:       "commandcontrol pending machines (refused unknown machines, for operators to accept)",
			Subjects:          []string{"$KV." + PendingBucket + ".>"},
			MaxMsgsPerSubject: 1,
			MaxMsgs:           pendingMaxMsgs,
			MaxBytes:          pendingMaxBytes,
			MaxMsgSize:        pendingMaxValue,
			Discard:           jetstream.DiscardOld,
			Storage:           jetstream.FileStorage,
			Replicas:          n,
			AllowRollup:       true,
			DenyDelete:        true,
			Duplicates:        2 * time.Minute,
			MaxConsumers:      -1,
			AllowDirect:       true,
			AllowMsgTTL:       true, // the markers of deleted entries go after pendingMarkerTTL
		})
		s.stream = st
		return err
	})
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	if s.kv, err = js.KeyValue(cctx, PendingBucket); err != nil {
		return nil, err
	}
	return s, nil
}

// owns reports whether this store holds entries of kind: the pending
// store pending ones only, the registry's every other kind.
func (s *kvStore) owns(kind string) bool { return s.pendingOnly == (kind == kindPending) }

// storeOf is the store that holds entries of kind.
func (s *kvStore) storeOf(kind string) *kvStore {
	if kind == kindPending && s.pending != nil {
		return s.pending
	}
	return s
}

// noJetStream reports whether err says the broker has no JetStream for
// the CONTROL account (as opposed to a failure of one that has).
func noJetStream(err error) bool {
	return errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

// attachKV makes the buckets on nc's broker the registry's store: it
// loads every entry into memory and keeps applying the buckets' changes
// until the store is closed.
func (r *Registry) attachKV(ctx context.Context, nc *nats.Conn, log *slog.Logger) (*kvStore, error) {
	s, err := openKVStore(ctx, nc, log)
	if err != nil {
		return nil, err
	}
	if s.pending, err = openPendingStore(ctx, s.js, log); err != nil {
		return nil, err
	}
	d := registryData{}
	d.fill()
	revs := map[string]uint64{}
	var stops []func()
	for _, st := range []*kvStore{s, s.pending} {
		st.nc = nc
		stop, err := st.load(ctx, &d, revs)
		if err != nil {
			for _, stop := range stops {
				stop() // the watches loaded are not followed
			}
			return nil, err
		}
		stops = append(stops, stop)
	}
	r.wmu.Lock()
	r.mu.Lock()
	r.data, r.revs, r.kv, r.file = d, revs, s, false
	r.changes.Add(1)
	r.mu.Unlock()
	r.wmu.Unlock()
	for _, st := range []*kvStore{s, s.pending} {
		st.follower.apply = func(e jetstream.KeyValueEntry) { r.applyWatched(st, e) }
		go st.follower.follow(st.watchCtx, st.watcher, 0, nil)
	}
	log.Info("registry in JetStream", "bucket", RegistryBucket, "pending_bucket", PendingBucket, "replicas", s.replicas,
		"machines", len(d.Machines), "operators", len(d.Operators), "pending", len(d.Pending), "apps", len(d.Apps))
	return s, nil
}

// load reads every entry of the bucket into d (and their revisions into
// revs) and leaves the watcher ready for follow; the function it returns
// stops that watcher (when the store is not attached after all).
func (s *kvStore) load(ctx context.Context, d *registryData, revs map[string]uint64) (func(), error) {
	wctx, stop := context.WithCancel(context.Background())
	s.follower = newKVFollower(s.bucket, s.nc, s.kv, s.stream, s.log, nil)
	floor := s.follower.lastRevision(ctx) // every revision up to it is delivered, or gone
	w, err := s.kv.WatchAll(wctx)
	if err != nil {
		stop()
		return nil, fmt.Errorf("watch the bucket %s: %w", s.bucket, err)
	}
	load := time.NewTimer(time.Minute)
	defer load.Stop()
	skipped := 0
loading:
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				stop()
				return nil, fmt.Errorf("the bucket %s's watcher ended while loading", s.bucket)
			}
			if e == nil {
				break loading
			}
			floor = max(floor, e.Revision())
			if e.Operation() != jetstream.KeyValuePut {
				continue
			}
			if kind, _, err := parseEntryKey(e.Key()); err == nil && kind != kindMeta && !s.owns(kind) {
				skipped++
				continue
			}
			kind, id, val, ok := s.decode(e)
			if ok {
				tmp := Registry{data: *d}
				tmp.setLocked(kind, id, val)
				revs[e.Key()] = e.Revision()
			}
		case <-load.C:
			stop()
			return nil, fmt.Errorf("loading the bucket %s took more than a minute", s.bucket)
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		}
	}
	if skipped > 0 {
		s.log.Info("entries of another bucket's kind skipped (pending machines an earlier version kept in the registry's bucket: "+
			"they are recorded again at the machines' next attempts)", "bucket", s.bucket, "skipped", skipped)
	}
	s.stop, s.rewatchNow = stop, make(chan struct{}, 1)
	s.follower.now = s.rewatchNow
	s.watchCtx, s.watcher = wctx, w
	s.follower.lastRev.Store(floor)
	return stop, nil
}

// checkedKey is c's bucket key, refused when too long: the broker closes
// a connection whose control line is too long, and this one is the
// callout's and the audit's too.
func (c regChange) checkedKey() (string, error) {
	key := c.key()
	if len(key) > maxKVKeyLen {
		return "", invalidf("%s %.40q…: its bucket key is %d bytes long; at most %d are allowed (the id is too long)",
			c.kind, c.id, len(key), maxKVKeyLen)
	}
	return key, nil
}

// deleteMarker is change c's delete marker, as the KV client writes one
// (a pending entry's purges its history and expires), with the
// compare-and-set on c's revision unless c is forced.
func (s *kvStore) deleteMarker(c regChange) (*nats.Msg, []jetstream.PublishOpt) {
	m := nats.NewMsg("$KV." + s.bucket + "." + c.key())
	var opts []jetstream.PublishOpt
	if c.kind == kindPending {
		m.Header.Set(kvOpHeader, kvOpPurge)
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		opts = append(opts, jetstream.WithMsgTTL(pendingMarkerTTL))
	} else {
		m.Header.Set(kvOpHeader, kvOpDel)
	}
	if !c.force {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(c.rev))
	}
	return m, opts
}

// rewatch asks the registry's bucket watcher, if any, to start again.
func (r *Registry) rewatch() {
	r.mu.RLock()
	s := r.kv
	r.mu.RUnlock()
	if s != nil {
		s.rewatch()
	}
}

// rewatch asks the watchers to start again (after a reconnect).
func (s *kvStore) rewatch() {
	select {
	case s.rewatchNow <- struct{}{}:
	default:
	}
	if s.pending != nil {
		s.pending.rewatch()
	}
}

// close ends the watchers.
func (s *kvStore) close() {
	if s.stop != nil {
		s.stop()
		<-s.follower.done
	}
	if s.pending != nil {
		s.pending.close()
	}
}

// decode reads a watched or fetched put; a malformed entry is logged and
// skipped (ok false).
func (s *kvStore) decode(e jetstream.KeyValueEntry) (kind, id string, val any, ok bool) {
	kind, id, err := parseEntryKey(e.Key())
	if err == nil && (kind == kindMeta || !s.owns(kind)) {
		return kind, id, nil, false
	}
	if err == nil {
		val, err = decodeEntry(kind, id, e.Value())
	}
	if err != nil {
		s.log.Error("registry bucket entry skipped: it is malformed", "key", e.Key(), "revision", e.Revision(), "error", err)
		return "", "", nil, false
	}
	return kind, id, val, true
}

// applyWatched applies a change the watcher delivered: another replica's,
// or this one's own (already held, skipped by its revision).
func (r *Registry) applyWatched(s *kvStore, e jetstream.KeyValueEntry) {
	var kind, id string
	var val any
	if e.Operation() == jetstream.KeyValuePut {
		var ok bool
		if kind, id, val, ok = s.decode(e); !ok {
			return
		}
	} else {
		var err error
		if kind, id, err = parseEntryKey(e.Key()); err != nil || kind == kindMeta || !s.owns(kind) {
			return
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	key, rev := e.Key(), e.Revision()
	if _, dirty := r.dirtyPending[id]; dirty {
		if p, ok := val.(*fleet.Pending); ok {
			if cur := r.data.Pending[id]; cur != nil {
				val = mergePending(cur, p) // attempts recorded here, not yet written
			}
		}
	}
	r.sitesChangedLocked(r.applyKVLocked(kind, id, val, rev)...)
	if val == nil && rev >= r.revs[key] {
		delete(r.revs, key) // the delete is seen: nothing older can come
	}
	if kind == kindPending && val != nil {
		for len(r.data.Pending) > MaxPending {
			r.dropOldestPendingLocked()
		}
	}
}

// applyKVLocked puts val (nil: deletes) at revision rev in memory, unless
// memory holds that revision or a later one already.
func (r *Registry) applyKVLocked(kind, id string, val any, rev uint64) []string {
	key := entryKey(kind, id)
	if rev <= r.revs[key] {
		return nil
	}
	r.revs[key] = rev
	if kind == kindPending && val == nil {
		delete(r.dirtyPending, id)
	}
	return r.setLocked(kind, id, val)
}

// write writes change c compare-and-set on its revision (a forced delete:
// whatever the revision) and returns the entry's new revision.
func (s *kvStore) write(c regChange) (uint64, error) {
	if t := s.storeOf(c.kind); t != s {
		return t.write(c)
	}
	key, err := c.checkedKey()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	if c.val != nil {
		b, err := json.Marshal(c.val)
		if err != nil {
			return 0, err
		}
		if c.rev == 0 {
			return s.kv.Create(ctx, key, b)
		}
		return s.kv.Update(ctx, key, b, c.rev)
	}
	// A delete marker, written as the KV client does, but through the
	// stream to learn its revision (KeyValue.Delete does not say it).
	m, opts := s.deleteMarker(c)
	pa, err := s.js.PublishMsg(ctx, m, opts...)
	if err != nil {
		return 0, err
	}
	return pa.Sequence, nil
}

// commit writes cs in order, applying each to memory once the bucket has
// it. A plan's first change is its compare-and-set one; on its conflict
// nothing is written and the change is returned, for the plan to run
// again. The forced deletes after it (pending entries made moot) cannot
// conflict; one that fails is logged: the change itself stands.
func (s *kvStore) commit(r *Registry, cs []regChange) (*regChange, error) {
	for i, c := range cs {
		rev, err := s.write(c)
		switch {
		case err == nil:
		case isConflict(err):
			return &cs[i], nil
		case i > 0 && c.force:
			s.log.Warn("registry: a pending entry made moot could not be deleted; it stays listed until removed",
				"machine", c.id, "error", err)
			continue
		case i > 0:
			return nil, fmt.Errorf("registry partly changed (%s %s not written): %w", c.kind, c.id, err)
		default:
			return nil, fmt.Errorf("registry not changed: %w", err)
		}
		r.mu.Lock()
		r.sitesChangedLocked(r.applyKVLocked(c.kind, c.id, c.val, rev)...)
		r.mu.Unlock()
	}
	return nil, nil
}

// reload reads entry kind/id from the bucket into memory (an entry
// another replica wrote a moment ago, or changed under a write). A
// pending entry held here too is merged with the bucket's.
func (s *kvStore) reload(r *Registry, kind, id string) error {
	if t := s.storeOf(kind); t != s {
		return t.reload(r, kind, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	key := entryKey(kind, id)
	msg, err := s.stream.GetLastMsgForSubject(ctx, "$KV."+s.bucket+"."+key)
	var val any
	var rev uint64
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return err
	default:
		rev = msg.Sequence
		if op := msg.Header.Get(kvOpHeader); op != kvOpDel && op != kvOpPurge {
			if val, err = decodeEntry(kind, id, msg.Data); err != nil {
				return fmt.Errorf("the bucket's %s is malformed: %w", key, err)
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := val.(*fleet.Pending); ok {
		if cur := r.data.Pending[id]; cur != nil {
			val = mergePending(cur, p)
		}
	}
	if rev == 0 {
		// Nothing in the bucket, not even a marker (it expired).
		if kind == kindPending && r.data.Pending[id] != nil {
			// Recorded here and not written yet, or its message was
			// dropped (the pending bucket was full): written anew.
			delete(r.revs, key)
			return nil
		}
		delete(r.revs, key)
		r.sitesChangedLocked(r.setLocked(kind, id, nil)...)
		return nil
	}
	r.sitesChangedLocked(r.applyKVLocked(kind, id, val, rev)...)
	return nil
}
