package controlsvc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Several control-service replicas may serve one cluster (active-active):
// each answers the callout and the control API (queue groups) and tracks
// presence from the brokers' events, but ONE of them, the holder of the
// presence lease, is the presence publisher. It alone publishes presence
// events (machines and sessions), answers presence and session
// snapshots, records calls in the audit (every replica matches them, and
// a new publisher records those made while none published:
// callhandover.go) and answers for offline machines, publishes
// the agents' reconnect hint and closes a machine's superseded
// connections: with two publishers every event, hint and audit record
// would be there twice, and two numberings of events would mix.
//
// The lease is one key in a KV bucket of the CONTROL account whose
// entries live LeaderLease: the holder renews it (compare-and-set on its
// revision) every quarter of it, the others try to create it as often.
// A holder that dies (kill -9) stops renewing; its entry expires and
// another replica creates it. A holder that closes deletes it, and
// another takes it at its next try.
//
// The lease's value names the holder and its instance, a random id of
// the process: two live replicas given one --replica-name (a copied unit
// file, or two containers whose default <host>-<pid> is alike) are told
// apart, and the second waits (saying so in an ERROR) instead of taking
// the lease from the first at every try. A replica takes the lease back
// at once only from its own instance (it stopped publishing but its
// entry is still there, e.g. after a pause); a restarted one is a new
// instance and waits for its predecessor's entry to expire (a graceful
// close deletes it, so only a crash costs that wait, at most one lease).
const (
	// LeaderBucket is the KV bucket of the lease, LeaderKey its key.
	LeaderBucket = "cc_leader"
	LeaderKey    = "presence"
	// DefaultLeaderLease is Config.LeaderLease's default.
	DefaultLeaderLease = 3 * time.Second
	// minLeaderLease bounds --leader-lease from below.
	minLeaderLease = 500 * time.Millisecond
)

// DefaultReplicaName is a replica's name unless given: host and process
// id, unique among the replicas that run at once.
func DefaultReplicaName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "cc-control"
	}
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}

// newInstanceID is a random id of this process's replica: what tells two
// replicas of one name apart (the lease, shared admissions, the audit).
func newInstanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// leaseHolder is the lease's value: who holds it.
type leaseHolder struct {
	Replica  string `json:"replica"`
	Instance string `json:"instance"`
}

// holderOf reads a lease value; one that is no leaseHolder (written by an
// older replica: its bare name) has no instance.
func holderOf(v []byte) leaseHolder {
	var h leaseHolder
	if json.Unmarshal(v, &h) != nil {
		return leaseHolder{Replica: string(v)}
	}
	return h
}

// presenceLease holds, or tries to take, the presence publisher's lease.
type presenceLease struct {
	log  *slog.Logger
	kv   jetstream.KeyValue
	name string
	// instance tells this process from another of the same name; value
	// is the lease's value (leaseHolder).
	instance string
	value    []byte
	// ttl is the lease's length (the bucket's TTL, which may have been
	// made by a replica with another --leader-lease).
	ttl time.Duration
	// now is the lease's clock: how long since the last renewal.
	now func() time.Time
	// set tells the tracker it leads or no longer does.
	set func(leading bool)

	mu      sync.Mutex
	held    bool
	rev     uint64
	renewed time.Time
	// until is when this replica stops publishing unless it renews
	// first (renewed + 3/4 of the lease, in now's UnixNano): a holder
	// that was paused (a stopped process, a VM's pause, a long GC)
	// publishes nothing on waking before its next renewal.
	until atomic.Int64
	// twin is the instance of the other live replica of this name
	// last said in the log ("": none).
	twin string
}

// leaseOpenWait bounds how long a replica waits for the brokers'
// JetStream to take the lease's bucket: a cluster that has just started
// elects its meta leader first.
const leaseOpenWait = 30 * time.Second

// openLease opens the lease's bucket (openLeaseOnce), asking again while
// JetStream is there but not ready, up to leaseOpenWait.
func openLease(ctx context.Context, log *slog.Logger, js jetstream.JetStream, name, instance string, ttl time.Duration) (*presenceLease, error) {
	deadline := time.Now().Add(leaseOpenWait)
	for {
		l, err := openLeaseOnce(ctx, log, js, name, instance, ttl)
		if err == nil || errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) ||
			errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
			return l, err
		}
		log.Info("waiting for JetStream to take the presence lease bucket", "error", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// openLeaseOnce opens (or creates) the lease's bucket on js, three
// replicas when the cluster can place them. The bucket's TTL is the
// lease: a bucket made by a replica with another lease keeps its own,
// said in the log.
func openLeaseOnce(ctx context.Context, log *slog.Logger, js jetstream.JetStream, name, instance string, ttl time.Duration) (*presenceLease, error) {
	var kv jetstream.KeyValue
	_, err := createReplicated(log, LeaderBucket, func(replicas int) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var err error
		kv, err = js.CreateKeyValue(cctx, jetstream.KeyValueConfig{Bucket: LeaderBucket, TTL: ttl, History: 1,
			Storage: jetstream.FileStorage, Replicas: replicas,
			Description: "the control service's presence publisher lease (one key, renewed by its holder)"})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(cctx, LeaderBucket)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("presence lease bucket %s: %w", LeaderBucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("presence lease bucket %s: %w", LeaderBucket, err)
	}
	if got := st.TTL(); got > 0 && got != ttl {
		log.Warn("the presence lease bucket was made with another lease; using it", "bucket", LeaderBucket, "lease", got, "asked", ttl,
			"fix", "give every replica the same --leader-lease, or delete the bucket while no replica runs")
		ttl = got
	}
	value, _ := json.Marshal(leaseHolder{Replica: name, Instance: instance})
	return &presenceLease{log: log, kv: kv, name: name, instance: instance, value: value, ttl: ttl, now: time.Now}, nil
}

// leading reports whether this replica holds the lease.
func (l *presenceLease) leading() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

// valid reports whether the lease, if held, was renewed recently enough
// to publish now: before renewed + 3/4 of it (by then the renewal that
// keeps it has succeeded, or try gives it up).
func (l *presenceLease) valid() bool {
	return l.now().UnixNano() < l.until.Load()
}

// try renews the lease if held, or tries to take it; it reports whether
// this replica holds it now and tells set when that changed.
func (l *presenceLease) try(ctx context.Context) bool {
	l.mu.Lock()
	held, rev, renewed := l.held, l.rev, l.renewed
	l.mu.Unlock()
	now := l.now()
	if held {
		// The entry written by the last renewal lives ttl from when the
		// server wrote it, which is after renewed (taken before the
		// request was sent). A renewal that has not succeeded by
		// renewed + 3/4 ttl gives up, and the replica stops publishing
		// before the entry can expire and another take it.
		stopBy := renewed.Add(l.ttl * 3 / 4)
		cctx, cancel := context.WithDeadline(ctx, stopBy)
		defer cancel()
		// The request does not always end at its context's deadline (a
		// connection cut mid-request took seconds): wait for it no
		// longer than that, and let it finish on its own.
		type renewal struct {
			rev uint64
			err error
		}
		done := make(chan renewal, 1)
		go func() {
			r, err := l.kv.Update(cctx, LeaderKey, l.value, rev)
			done <- renewal{r, err}
		}()
		var res renewal
		select {
		case res = <-done:
		case <-time.After(stopBy.Sub(now)):
			res.err = context.DeadlineExceeded
		}
		switch err := res.err; {
		case err == nil:
			if !l.now().Before(stopBy) {
				// Renewed, but only after this replica should have
				// stopped publishing (it was paused): what it did
				// not publish meanwhile is behind a new epoch.
				l.update(false, 0, now, "the lease was renewed too late to have published all along")
			}
			l.update(true, res.rev, now, "")
			return true
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound):
			// Expired (this replica was cut off longer than the
			// lease) and maybe taken by another: stop at once.
			l.update(false, 0, now, "the lease expired or another replica took it: "+err.Error())
			return false
		case !l.now().Before(stopBy):
			l.update(false, 0, now, "cannot renew the lease in time: "+err.Error())
			return false
		}
		return true // a quick failure: try again at the next tick
	}
	// A try may take longer than the period between tries (a loaded
	// cluster); the next waits for it.
	cctx, cancel := context.WithTimeout(ctx, max(l.ttl/2, time.Second))
	defer cancel()
	r, err := l.kv.Create(cctx, LeaderKey, l.value)
	if err == nil {
		l.update(true, r, now, "")
		return true
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		e, gerr := l.kv.Get(cctx, LeaderKey)
		if gerr != nil {
			return false
		}
		switch h := holderOf(e.Value()); {
		case h.Instance == l.instance:
			// Still this process's (it gave up publishing, paused or
			// cut off, while its entry lived on): take it back rather
			// than wait for it to expire.
			if r, err = l.kv.Update(cctx, LeaderKey, l.value, e.Revision()); err == nil {
				l.update(true, r, now, "")
				return true
			}
		case h.Replica == l.name:
			l.sameName(h)
		}
		return false
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
		l.log.Debug("cannot take the presence lease", "error", err)
	}
	return false
}

// sameName says, once per other instance, that another live replica
// holds the lease under this replica's name: this one waits for it to go
// (or for its entry to expire) rather than take the lease from it.
func (l *presenceLease) sameName(h leaseHolder) {
	l.mu.Lock()
	said := l.twin == h.Instance
	l.twin = h.Instance
	l.mu.Unlock()
	if !said {
		l.log.Error("another live replica holds the presence lease under this replica's name; this one waits for it to go",
			"replica", l.name, "instance", l.instance, "holder_instance", h.Instance,
			"fix", "give each replica its own --replica-name (two replicas of one name were both publisher)")
	}
}

// update records the lease's state and tells set when it changed.
func (l *presenceLease) update(held bool, rev uint64, at time.Time, why string) {
	l.mu.Lock()
	was := l.held
	l.held = held
	if held {
		l.rev, l.renewed = rev, at
		l.until.Store(at.Add(l.ttl * 3 / 4).UnixNano())
	} else {
		l.until.Store(0)
	}
	l.mu.Unlock()
	if was == held {
		return
	}
	if held {
		l.log.Info("this replica is the presence publisher now", "replica", l.name, "lease", l.ttl)
	} else {
		l.log.Warn("this replica is no longer the presence publisher", "replica", l.name, "why", why)
	}
	if l.set != nil {
		l.set(held)
	}
}

// run keeps trying (renewing, or taking) the lease every quarter of it
// until ctx ends, then gives it up: deleted, so another replica takes it
// at its next try instead of waiting for it to expire.
func (l *presenceLease) run(ctx context.Context) {
	t := time.NewTicker(max(l.ttl/4, 50*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.release()
			return
		case <-t.C:
			l.try(ctx)
		}
	}
}

// release gives the lease up if held.
func (l *presenceLease) release() {
	l.mu.Lock()
	held, rev := l.held, l.rev
	l.held = false
	l.until.Store(0)
	l.mu.Unlock()
	if !held {
		return
	}
	if l.set != nil {
		l.set(false)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.kv.Delete(ctx, LeaderKey, jetstream.LastRevision(rev)); err != nil {
		l.log.Debug("giving the presence lease up", "error", err)
	}
}

// leadPresence takes part in the presence lease on the CONTROL account's
// JetStream: it tries once at once (a replica that wins starts as the
// publisher, with the numbering of events it saved), then keeps renewing
// or trying in the background. Without JetStream there is no lease and
// this replica publishes alone, said in the log. stop gives the lease up.
func (s *Service) leadPresence(ctx context.Context) (stop func()) {
	tr := s.presence
	log := s.log.With("component", "leader")
	js, err := jetstream.New(s.ctl)
	var l *presenceLease
	if err == nil {
		l, err = openLease(ctx, log, js, s.cfg.ReplicaName, s.instance, s.cfg.LeaderLease)
	}
	if err != nil {
		log.Warn("no presence lease (the brokers have no JetStream for the CONTROL account): this replica publishes presence alone; run only one control service, or give the brokers --store-dir",
			"error", err)
		tr.setLeading(true)
		return func() {}
	}
	s.lease = l
	tr.lease.Store(l)
	tr.awaitShared = sharedAdmissionWait // other replicas may admit sessions
	if !l.try(ctx) {
		log.Info("another replica is the presence publisher; this one tracks presence and takes over if it goes", "replica", s.cfg.ReplicaName)
		tr.setLeading(false)
	}
	l.set = tr.setLeading
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(lctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// Leading reports whether this replica is the presence publisher (it
// holds the lease, or there is no lease).
func (s *Service) Leading() bool { return s.presence.publishing() }

// publishing reports whether this replica is the presence publisher: the
// one gate of everything only the publisher does (presence and session
// events, snapshots, the hint, the call audit, superseding). A holder
// whose last renewal is older than 3/4 of the lease does not publish
// (presenceLease.valid): it was paused, and another may hold the lease
// by the time it would.
func (tr *presenceTracker) publishing() bool {
	if !tr.leading.Load() {
		return false
	}
	l := tr.lease.Load()
	return l == nil || l.valid()
}

// setLeading makes this replica the presence publisher, or no longer.
// Either way its events get a new epoch: a replica that takes over
// numbers its events anew, so watchers (who follow the epoch they were
// given) resync against its snapshot; one that steps down numbers what
// it no longer publishes privately, so its numbering can never be taken
// for the publisher's. Taking over also resyncs against CONNZ at once.
func (tr *presenceTracker) setLeading(on bool) {
	if tr.leading.Load() == on {
		return
	}
	if on {
		tr.renumber()
		tr.leadGen.Add(1)
		tr.leading.Store(true)
		tr.resyncSoon()
		return
	}
	tr.leading.Store(false)
	tr.renumber()
}

// renumber gives presence and sessions events a new epoch.
func (tr *presenceTracker) renumber() {
	tr.state.renumber()
	if tr.sessions != nil {
		tr.sessions.renumber()
	}
}

// renumber starts a new numbering of events (a new epoch); a snapshot
// shows it.
func (p *presence) renumber() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.epoch = newEpoch()
	p.ver++
}

// renumber starts a new numbering of session events.
func (p *sessionPresence) renumber() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.epoch = newEpoch()
	p.ver++
}
