package perf

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// fleetCall times repeated full-fleet calls of current-load through the
// workbench SDK; every call must get every reply. resent is how many
// copies the calls sent again to machines that had not answered yet
// (bench.Summary.Resent): work a slow call added to itself.
func fleetCall(ctx context.Context, c *bench.Client, n, reps int) (d Durations, resent int, err error) {
	for i := 0; i < reps; i++ {
		start := time.Now()
		s, err := c.Stream(ctx, fleet.FnCurrentLoad, nil, bench.CallOptions{Timeout: 60 * time.Second}, func(bench.Reply) {})
		if err != nil {
			return nil, resent, err
		}
		took := time.Since(start)
		if s.Expected != n || s.NumOK != n {
			return nil, resent, fmt.Errorf("fleet call %d: %s", i, s.String())
		}
		d = append(d, took)
		resent += s.Resent
	}
	return d, resent, nil
}

// directCall times a single-machine call through the SDK and the same
// request as a plain nats.go Request to the same agent, interleaved.
func directCall(ctx context.Context, c *bench.Client, machine string, reps int) (sdk, raw Durations, err error) {
	// The raw side: one subscription for its replies (as nats.go's
	// request mux has), a request published per repetition.
	key := c.Key()
	subject := fleet.FnSubject(machine, fleet.FnCurrentLoad, key)
	replies := make(chan *nats.Msg, 1)
	sub, err := c.Conn().ChanSubscribe(fleet.DirectInbox(key, machine)+".raw.*", replies)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	for i := 0; i < reps; i++ {
		start := time.Now()
		s, err := c.Stream(ctx, fleet.FnCurrentLoad, nil, bench.CallOptions{Machines: []string{machine}, Timeout: 10 * time.Second}, func(bench.Reply) {})
		if err != nil {
			return nil, nil, err
		}
		if s.NumOK != 1 {
			return nil, nil, fmt.Errorf("direct call: %s", s.String())
		}
		sdk = append(sdk, time.Since(start))
		start = time.Now()
		if err := c.Conn().PublishRequest(subject, fleet.DirectInbox(key, machine)+".raw."+strconv.Itoa(i), nil); err != nil {
			return nil, nil, err
		}
		select {
		case <-replies:
		case <-time.After(10 * time.Second):
			return nil, nil, fmt.Errorf("raw direct call: no reply within 10s")
		}
		raw = append(raw, time.Since(start))
	}
	return sdk, raw, nil
}
