package perf

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/commandcontrol/commandcontrol/swarm"
	"github.com/nats-io/nats.go"
)

// rawFanout is the baseline: a plain nats-server in a process of its own
// (cc-perf raw-broker, as cc-control is one), n plain responders in
// cc-swarm --baseline children (see swarm.Baseline), and a requester that
// publishes once and counts n replies on a plain subscription.
func rawFanout(ctx context.Context, cfg Config, n, reps int) (Durations, error) {
	dir, err := os.MkdirTemp("", "cc-perf-raw-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	listen, err := freePort()
	if err != nil {
		return nil, err
	}
	b := &ccBroker{name: "raw", url: "nats://" + listen, log: filepath.Join(dir, "raw.log"),
		args: []string{RawBrokerCommand, "--listen", listen}}
	if err := b.start(cfg.PerfBinary); err != nil {
		return nil, err
	}
	defer b.stop()
	if err := waitLogLine(ctx, b.log, "ready", 30*time.Second); err != nil {
		return nil, err
	}
	return rawFanoutAt(ctx, cfg.SwarmBinary, func(int) string { return b.url }, n, reps)
}

// rawFanoutAt is rawFanout against brokers already running: simulator
// child i connects to url(i), the requester to url(0).
func rawFanoutAt(ctx context.Context, bin string, url func(child int) string, n, reps int) (Durations, error) {
	procs, _, err := spawnSwarmAt(ctx, bin, url, "", n, "raw", true)
	if err != nil {
		return nil, err
	}
	defer procs.stop()
	req, err := nats.Connect(url(0))
	if err != nil {
		return nil, err
	}
	defer req.Close()
	var d Durations
	// warm is an untimed round first: on a cluster the responders'
	// interest reaches the requester's broker over the routes a moment
	// after they are ready.
	warmed := 0
	for i := -1; i < reps; i++ {
		inbox := nats.NewInbox()
		var got atomic.Int64
		done := make(chan struct{})
		sub, err := req.Subscribe(inbox, func(*nats.Msg) {
			if got.Add(1) == int64(n) {
				close(done)
			}
		})
		if err != nil {
			return nil, err
		}
		_ = sub.SetPendingLimits(-1, -1)
		start := time.Now()
		if err := req.PublishRequest(swarm.BaselineSubject, inbox, []byte("{}")); err != nil {
			return nil, err
		}
		wait := 60 * time.Second
		if i < 0 {
			wait = 30 * time.Second
		}
		select {
		case <-done:
		case <-time.After(wait):
			_ = sub.Unsubscribe()
			if i < 0 {
				if warmed++; warmed == 10 {
					return nil, fmt.Errorf("baseline fan-out: %d of %d replies in 30s, ten times", got.Load(), n)
				}
				i-- // warm again
				continue
			}
			return nil, fmt.Errorf("baseline fan-out: %d of %d replies in 60s", got.Load(), n)
		}
		if i >= 0 {
			d = append(d, time.Since(start))
		}
		_ = sub.Unsubscribe()
	}
	return d, nil
}
