package perf

import (
	"context"
	"fmt"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// fleetCall times repeated full-fleet calls of current-load through the
// workbench SDK; every call must get every reply.
func fleetCall(ctx context.Context, c *bench.Client, n, reps int) (Durations, error) {
	var d Durations
	for i := 0; i < reps; i++ {
		start := time.Now()
		s, err := c.Stream(ctx, "current-load", nil, bench.CallOptions{Timeout: 60 * time.Second}, func(bench.Reply) {})
		if err != nil {
			return nil, err
		}
		took := time.Since(start)
		if s.Expected != n || s.NumOK != n {
			return nil, fmt.Errorf("fleet call %d: %s", i, s.String())
		}
		d = append(d, took)
	}
	return d, nil
}

// directCall times a single-machine call through the SDK and the same
// request as a plain nats.go Request to the same agent, interleaved.
func directCall(ctx context.Context, c *bench.Client, machine string, reps int) (sdk, raw Durations, err error) {
	subject := fleet.FnSubject(machine, "current-load")
	for i := 0; i < reps; i++ {
		start := time.Now()
		s, err := c.Stream(ctx, "current-load", nil, bench.CallOptions{Machines: []string{machine}, Timeout: 10 * time.Second}, func(bench.Reply) {})
		if err != nil {
			return nil, nil, err
		}
		if s.NumOK != 1 {
			return nil, nil, fmt.Errorf("direct call: %s", s.String())
		}
		sdk = append(sdk, time.Since(start))
		start = time.Now()
		if _, err := c.Conn().Request(subject, nil, 10*time.Second); err != nil {
			return nil, nil, err
		}
		raw = append(raw, time.Since(start))
	}
	return sdk, raw, nil
}
