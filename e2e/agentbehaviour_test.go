package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestSlowOrPanickingFunctionHarmsNothing: a wedged function on one agent
// does not hold up that agent's other functions, and a panicking one
// answers 500 while the agent lives on.
func TestSlowOrPanickingFunctionHarmsNothing(t *testing.T) {
	svc := startControl(t, "")
	release := make(chan struct{})
	defer close(release)
	wedged := functions.FuncOf(functions.Spec{Name: "wedged", Help: "blocks", ReadOnly: true},
		func(ctx context.Context, _ functions.Args) (any, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return "late", nil
		})
	boom := functions.FuncOf(functions.Spec{Name: "boom", Help: "panics", ReadOnly: true},
		func(context.Context, functions.Args) (any, error) { panic("kaboom") })
	a := startAgent(t, svc, "10.0.0.1_web01", true, echoFn(), wedged, boom)
	stacktest.WaitFor(t, "agent online", 5*time.Second, func() bool { return stacktest.Online(svc, a.MachineID()) })
	op := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())

	for range 3 {
		if err := stacktest.Send(op, a.MachineID(), "wedged", nil); err != nil {
			t.Fatal(err)
		}
	}
	m, err := stacktest.Request(op, a.MachineID(), "echo", []byte(`{"msg":"x"}`), 2*time.Second)
	if err != nil {
		t.Fatalf("echo behind three wedged calls: %v", err)
	}
	if string(m.Data) != `{"msg":"x"}` {
		t.Fatalf("echo: got %q", m.Data)
	}
	m, err = stacktest.Request(op, a.MachineID(), "boom", nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	e := fleet.ErrorFromHeader(m.Header.Get(fleet.HeaderErrorCode), m.Header.Get(fleet.HeaderError))
	if e == nil || e.Code != fleet.CodeInternal || !strings.Contains(e.Description, "kaboom") {
		t.Fatalf("panicking function: got %v, want a 500 naming the panic", e)
	}
	if _, err := stacktest.Request(op, a.MachineID(), "echo", []byte(`{}`), 2*time.Second); err != nil {
		t.Fatalf("agent dead after a panic: %v", err)
	}
}
