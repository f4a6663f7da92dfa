package controlsvc

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// kvFollower keeps applying a KV bucket's changes, as the registry's
// follow does (registry_kv.go; the same logic, for any bucket): a watch
// is an ordered consumer on one broker, and when that broker dies the
// client notices only after missed heartbeats (18 s in the replica
// tests). So the watch starts again, resuming after the last revision
// applied, after the connection reconnected (seen at the next check:
// a connection has one reconnect handler, the registry's) and when it
// stalls behind the bucket: behind at two checks in a row with nothing
// applied between.
type kvFollower struct {
	name   string
	nc     *nats.Conn
	kv     jetstream.KeyValue
	stream jetstream.Stream // the bucket's stream: its last revision
	log    *slog.Logger
	// apply takes each change (puts, deletes and purges).
	apply func(jetstream.KeyValueEntry)
	// check is how often the watch is checked (0: watchStallCheck).
	check time.Duration
	// now, when set, starts the watch again at once (the registry's:
	// its connection's reconnect handler signals it).
	now chan struct{}

	// done is closed when run's follower has stopped.
	done    chan struct{}
	lastRev atomic.Uint64
	// restarts counts the watches started again.
	restarts atomic.Int64
}

// watchStallCheck is how often the watcher compares the bucket's last
// revision with the last one it applied; a watcher behind for two checks
// in a row with nothing delivered meanwhile is started again.
const watchStallCheck = 2 * time.Second

func newKVFollower(name string, nc *nats.Conn, kv jetstream.KeyValue, stream jetstream.Stream, log *slog.Logger,
	apply func(jetstream.KeyValueEntry)) *kvFollower {
	return &kvFollower{name: name, nc: nc, kv: kv, stream: stream, log: log, apply: apply, done: make(chan struct{})}
}

// lastRevision is the bucket's last revision, or 0 when it cannot be
// asked.
func (f *kvFollower) lastRevision(ctx context.Context) uint64 {
	cctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	info, err := f.stream.Info(cctx)
	if err != nil {
		return 0
	}
	return info.State.LastSeq
}

// run watches the whole bucket and applies its changes until ctx ends
// (then done is closed); loaded is closed once the first watch delivered
// what the bucket held.
func (f *kvFollower) run(ctx context.Context, loaded chan<- struct{}) error {
	floor := f.lastRevision(ctx) // every revision up to it is delivered, or gone
	w, err := f.kv.WatchAll(ctx)
	if err != nil {
		close(f.done)
		return err
	}
	go f.follow(ctx, w, floor, loaded)
	return nil
}

func (f *kvFollower) follow(ctx context.Context, w jetstream.KeyWatcher, floor uint64, loaded chan<- struct{}) {
	defer close(f.done)
	check := f.check
	if check <= 0 {
		check = watchStallCheck
	}
	tick := time.NewTicker(check)
	defer tick.Stop()
	var behindAt uint64 // lastRev when the bucket was last seen ahead
	reconnects := f.nc.Stats().Reconnects
	for {
		restart := false
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return
		case e, ok := <-w.Updates():
			if !ok {
				restart = true
				break
			}
			if e == nil {
				// Caught up: revisions up to floor that were not
				// delivered are gone (expired markers, purges).
				f.lastRev.Store(max(f.lastRev.Load(), floor))
				if loaded != nil {
					close(loaded)
					loaded = nil
				}
				continue
			}
			if e.Revision() > f.lastRev.Load() {
				f.apply(e)
				f.lastRev.Store(e.Revision())
			}
		case <-f.now:
			restart = true
		case <-tick.C:
			if n := f.nc.Stats().Reconnects; n != reconnects {
				reconnects, restart = n, true
				break
			}
			last, cur := f.lastRevision(ctx), f.lastRev.Load()
			switch {
			case last <= cur:
				behindAt = 0
			case behindAt == cur:
				restart, behindAt = true, 0
			default:
				behindAt = cur
			}
		}
		if !restart {
			continue
		}
		_ = w.Stop()
		for {
			var err error
			floor = f.lastRevision(ctx)
			w, err = f.kv.WatchAll(ctx, jetstream.ResumeFromRevision(f.lastRev.Load()+1))
			if err == nil {
				f.restarts.Add(1)
				f.log.Info("KV bucket watch started again", "bucket", f.name, "after_revision", f.lastRev.Load())
				break
			}
			f.log.Warn("KV bucket watch: cannot start again; retrying", "bucket", f.name, "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}
