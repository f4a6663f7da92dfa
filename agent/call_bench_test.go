package agent_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// BenchmarkAgentCall measures the agent's call path end to end on the
// real stack: an operator's call, the agent's checks and bookkeeping, the
// function and its reply, for an instant function (answered in place)
// and one that takes a call slot (answered from its own goroutine), one
// call at a time and with 8 in flight. The caller's rate is unlimited.
func BenchmarkAgentCall(b *testing.B) {
	svc := stacktest.StartControl(b)
	const id = "10.0.9.1_bench"
	runAgent(b, svc, id, agent.Config{CallerRate: -1},
		functions.FuncOf(functions.Spec{Name: "bench-instant", Help: "a benchmark function", ReadOnly: true, Instant: true},
			func(context.Context, functions.Args) (any, error) { return map[string]int{"n": 1}, nil }),
		stacktest.Result("bench-slot", map[string]int{"n": 1}))
	kp, err := nkeys.FromSeed(stacktest.OperatorSeed(b, svc, "bencher", fleet.RoleAdmin))
	if err != nil {
		b.Fatal(err)
	}
	for _, fn := range []string{"bench-instant", "bench-slot"} {
		for _, inflight := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/inflight=%d", fn, inflight), func(b *testing.B) {
				conns := make([]*nats.Conn, inflight)
				for i := range conns {
					conns[i] = stacktest.Connect(b, svc.ClientURL(), kp, fmt.Sprintf("bencher-%d", i))
				}
				b.ResetTimer()
				var wg sync.WaitGroup
				for i, nc := range conns {
					n := b.N / inflight
					if i < b.N%inflight {
						n++
					}
					wg.Go(func() { callN(b, nc, id, fn, n) })
				}
				wg.Wait()
			})
		}
	}
}

// callN calls fn on machine n times in a row, each after the last answer.
func callN(b *testing.B, nc *nats.Conn, machine, fn string, n int) {
	for range n {
		m, err := stacktest.Request(nc, machine, fn, nil, stacktest.WaitTimeout)
		if err != nil {
			b.Error(err)
			return
		}
		if c := m.Header.Get(fleet.HeaderErrorCode); c != "" {
			b.Errorf("%s answered %s: %s", fn, c, m.Header.Get(fleet.HeaderError))
			return
		}
	}
}
