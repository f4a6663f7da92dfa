package agent_test

import (
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// runAgent registers machine id and runs its agent configured by cfg
// (URL, key, machine id and functions filled in: the built-ins and fns)
// on svc's broker until the test ends; it returns once the agent is
// ONLINE and subscribed.
func runAgent(t testing.TB, svc *controlsvc.Service, id string, cfg agent.Config, fns ...functions.Function) *agent.Agent {
	t.Helper()
	set := functions.New(&functions.Env{MachineID: id, Now: cfg.Now})
	for _, f := range fns {
		if err := set.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	stacktest.RegisterMachine(t, svc, id, nil)
	cfg.URL, cfg.Key, cfg.MachineID, cfg.Functions, cfg.NoSamplers = svc.ClientURL(), stacktest.MachineKey(t, id), id, set, true
	cfg.MaxReconnectDelay = 300 * time.Millisecond
	if cfg.Logger == nil {
		cfg.Logger = stacktest.Logger().With("side", "agent")
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	stacktest.RunAgent(t, svc, a)
	return a
}
