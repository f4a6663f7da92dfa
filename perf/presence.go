package perf

import (
	"context"
	"fmt"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nkeys"
)

// presenceLatency measures, reps times, the time from an agent's
// connection being established to the joined event reaching a watching
// workbench (watcher; nil: the stack's client), and from the agent
// closing to the left event.
func presenceLatency(ctx context.Context, st *stack, watcher *bench.Client, id string, reps int) (join, leave Durations, err error) {
	if watcher == nil {
		watcher = st.c
	}
	events := make(chan fleet.PresenceEvent, 1024)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_ = watcher.Watch(wctx, func(ev fleet.PresenceEvent) {
			if ev.Event == fleet.EventJoined || ev.Event == fleet.EventLeft {
				events <- ev
			}
		})
	}()
	time.Sleep(200 * time.Millisecond) // the watch is subscribed and synced
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	if _, err := st.c.AddMachine(ctx, id, pub, nil); err != nil {
		return nil, nil, err
	}
	wait := func(event string) (time.Time, error) {
		deadline := time.After(10 * time.Second)
		for {
			select {
			case ev := <-events:
				if ev.Machine == id && ev.Event == event {
					return time.Now(), nil
				}
			case <-deadline:
				return time.Time{}, fmt.Errorf("no %s event for %s in 10s", event, id)
			}
		}
	}
	for range reps {
		connected := make(chan time.Time, 2)
		a, err := agent.New(agent.Config{URL: st.url, Key: kp, MachineID: id, NoSamplers: true,
			Functions: functions.New(&functions.Env{MachineID: id}),
			OnConnect: func() { connected <- time.Now() }})
		if err != nil {
			return nil, nil, err
		}
		if err := a.Start(ctx); err != nil {
			return nil, nil, err
		}
		got, err := wait(fleet.EventJoined)
		if err != nil {
			a.Close()
			return nil, nil, err
		}
		join = append(join, got.Sub(<-connected))
		closed := time.Now()
		a.Close()
		got, err = wait(fleet.EventLeft)
		if err != nil {
			return nil, nil, err
		}
		leave = append(leave, got.Sub(closed))
	}
	return join, leave, nil
}
