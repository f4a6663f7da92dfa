package perf

import (
	"context"
	"fmt"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/swarm"
)

// Built with the workbench's session calls (issue #13; the tag goes once
// they are merged): the sessions benchmark also times the whole SDK call,
// the city selected by the control service and every session called.
func init() { sdkSessionCalls = workbenchSessionCalls }

// workbenchSessionCalls times reps calls of latencyCheck through
// bench.Client.Stream with CallOptions.Sessions (after one untimed call):
// the session snapshot selecting the city, a request per session, all
// replies in.
func workbenchSessionCalls(ctx context.Context, c *bench.Client, city, reps int) (Durations, error) {
	q := &fleet.SessionQuery{Where: map[string]string{"app": sessionApp, "city": benchCity.City, "region": benchCity.Region}}
	args := map[string]any{"url": "https://example.com/", "count": 3}
	var d Durations
	for i := -1; i < reps; i++ {
		start := time.Now()
		s, err := c.Stream(ctx, swarm.FnLatencyCheck, args, bench.CallOptions{Sessions: q, Timeout: 60 * time.Second}, func(bench.Reply) {})
		if err != nil {
			return nil, err
		}
		took := time.Since(start)
		if s.Expected != city || s.NumOK != city {
			return nil, fmt.Errorf("workbench session call %d: %s", i+1, s.String())
		}
		if i >= 0 {
			d = append(d, took)
		}
	}
	return d, nil
}
