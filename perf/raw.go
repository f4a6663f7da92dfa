package perf

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/commandcontrol/commandcontrol/swarm"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// rawFanout is the baseline: a plain nats-server, n plain responders in
// cc-swarm --baseline children (see swarm.Baseline), and a requester that
// publishes once and counts n replies on a plain subscription.
func rawFanout(ctx context.Context, bin string, n, reps int) (Durations, error) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, err
	}
	go srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		return nil, fmt.Errorf("baseline server not ready")
	}
	procs, _, err := spawnSwarm(ctx, bin, srv.ClientURL(), "", n, "raw", true)
	if err != nil {
		return nil, err
	}
	defer procs.stop()
	req, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return nil, err
	}
	defer req.Close()
	var d Durations
	for i := 0; i < reps; i++ {
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
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = sub.Unsubscribe()
			return nil, fmt.Errorf("baseline fan-out: %d of %d replies in 60s", got.Load(), n)
		}
		d = append(d, time.Since(start))
		_ = sub.Unsubscribe()
	}
	return d, nil
}
