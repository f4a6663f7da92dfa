package stacktest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// MachineKey is the nkey of machine id: the key [Key] derives from
// "machine:"+id.
func MachineKey(t testing.TB, id string) nkeys.KeyPair {
	t.Helper()
	return Key(t, "machine:"+id)
}

// RegisterMachine adds machine id with its [MachineKey] and labels to the
// registry, added by "test".
func RegisterMachine(t testing.TB, svc *controlsvc.Service, id string, labels map[string]string) {
	t.Helper()
	RegisterKey(t, svc, id, Pub(t, MachineKey(t, id)), labels)
}

// RegisterKey adds machine id with public key pub and labels to the
// registry, added by "test".
func RegisterKey(t testing.TB, svc *controlsvc.Service, id, pub string, labels map[string]string) {
	t.Helper()
	if _, err := svc.Registry().AddMachine(id, pub, labels, "test", false); err != nil {
		t.Fatal(err)
	}
}

// NewAgent builds, but does not start, a real agent for machine id with
// its [MachineKey]: it serves the built-in functions and fns (which
// replace built-ins of the same name). It is closed when the test ends.
// Start it with a.Start(ctx); whether it is let in depends on the registry.
func NewAgent(t testing.TB, svc *controlsvc.Service, id string, fns ...functions.Function) *agent.Agent {
	t.Helper()
	return NewAgentWith(t, agent.Config{URL: svc.ClientURL(), MachineID: id}, fns...)
}

// NewAgentWith is [NewAgent] configured by cfg (its URL, MachineID, limits
// and NATS options): what cfg leaves unset is filled in — the key is the
// [MachineKey], the functions are the built-ins and fns, reconnects are
// at most 300ms apart, the log is [Logger]'s, and it reports no facts
// (so outputs do not depend on the host the tests run on: set cfg.Facts,
// e.g. to [FixedFacts] or agent.GatherFacts, for a test of facts). It is
// closed when the test ends.
func NewAgentWith(t testing.TB, cfg agent.Config, fns ...functions.Function) *agent.Agent {
	t.Helper()
	id := cfg.MachineID
	if cfg.Facts == nil {
		cfg.Facts = func(context.Context) *fleet.Facts { return nil }
	}
	if cfg.Key == nil && cfg.KeyFile == "" {
		cfg.Key = MachineKey(t, id)
	}
	if cfg.Functions == nil && cfg.FunctionsDir == "" {
		set := functions.New(&functions.Env{MachineID: id})
		for _, f := range fns {
			if err := set.Add(f); err != nil {
				t.Fatal(err)
			}
		}
		cfg.Functions = set
	} else if len(fns) > 0 {
		t.Fatal("stacktest.NewAgentWith: fns and cfg's functions both given")
	}
	if cfg.MaxReconnectDelay == 0 {
		cfg.MaxReconnectDelay = 300 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = Logger().With("side", "agent", "machine", id)
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

// Spawn starts a (see [NewAgentWith]) without waiting for anything: it
// may be let in or refused, as the test wants to see. The agent runs until
// the test ends or a.Close.
func Spawn(t testing.TB, a *agent.Agent) {
	t.Helper()
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// StartAgent registers machine id with labels, starts its agent (see
// [NewAgent]) and waits until the machine is ONLINE and its functions are
// subscribed.
func StartAgent(t testing.TB, svc *controlsvc.Service, id string, labels map[string]string, fns ...functions.Function) *agent.Agent {
	t.Helper()
	RegisterMachine(t, svc, id, labels)
	a := NewAgent(t, svc, id, fns...)
	RunAgent(t, svc, a)
	return a
}

// RunAgent starts a (built by [NewAgent], its machine registered) and
// waits until it is ONLINE and its functions are subscribed on the broker.
// The agent runs until the test ends or a.Close.
func RunAgent(t testing.TB, svc *controlsvc.Service, a *agent.Agent) {
	t.Helper()
	if err := Launch(t.Context(), svc, a); err != nil {
		t.Fatal(err)
	}
}

// Launch is [RunAgent] for any goroutine: it returns what went wrong
// instead of failing the test. ctx bounds the agent's background samplers.
func Launch(ctx context.Context, svc *controlsvc.Service, a *agent.Agent) error {
	if err := a.Start(ctx); err != nil {
		return err
	}
	if err := Await(svc, a.MachineID(), true); err != nil {
		return err
	}
	// The round trip makes sure the broker has the agent's subscriptions.
	if err := a.Conn().FlushTimeout(WaitTimeout); err != nil {
		return fmt.Errorf("agent %s: flush: %w", a.MachineID(), err)
	}
	return nil
}

// Func is a client function name running call; args declares the
// arguments it takes (the agent refuses any other).
func Func(name string, call func(ctx context.Context, args functions.Args) (any, error), args ...functions.Arg) functions.Function {
	return functions.FuncOf(functions.Spec{Name: name, Help: "a test function", ReadOnly: true, Args: args}, call)
}

// Result is function name answering v.
func Result(name string, v any, args ...functions.Arg) functions.Function {
	return Func(name, func(context.Context, functions.Args) (any, error) { return v, nil }, args...)
}

// Fail is function name answering the error code and description.
func Fail(name string, code int, description string, args ...functions.Arg) functions.Function {
	return Func(name, func(context.Context, functions.Args) (any, error) {
		return nil, fleet.Errorf(code, "%s", description)
	}, args...)
}

// Echo is function name answering {"machine": machine, "fn": name, "args":
// the arguments}.
func Echo(name, machine string, args ...functions.Arg) functions.Function {
	return Func(name, func(_ context.Context, a functions.Args) (any, error) {
		return map[string]any{"machine": machine, "fn": name, "args": a}, nil
	}, args...)
}

// Silent is function name that never answers while the test runs: it
// returns only when the call's context ends or the test is over.
func Silent(t testing.TB, name string, args ...functions.Arg) functions.Function {
	done := t.Context().Done()
	return Func(name, func(ctx context.Context, _ functions.Args) (any, error) {
		select {
		case <-ctx.Done():
		case <-done:
		}
		return nil, fleet.Errorf(fleet.CodeTimeout, "%s was silent", name)
	}, args...)
}

// Slow is function name answering v after d (or an error when the call's
// context ends first).
func Slow(name string, d time.Duration, v any, args ...functions.Arg) functions.Function {
	return Func(name, func(ctx context.Context, _ functions.Args) (any, error) {
		select {
		case <-time.After(d):
			return v, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}, args...)
}

// FixedFacts returns facts (a fresh copy each call) for a test agent
// (agent.Config.Facts): a Debian 12 arm64 VM with 2 CPUs and 4 GiB,
// booted at 2031-01-02 03:04:05 UTC.
func FixedFacts(context.Context) *fleet.Facts {
	return &fleet.Facts{OS: "linux", Platform: "debian", PlatformVersion: "12.5", Kernel: "6.1.0-18-arm64", Arch: "arm64",
		CPUs: 2, MemoryBytes: 4 << 30, Virtualization: "kvm", AgentVersion: "0.1.0 (test)",
		BootTime: time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)}
}
