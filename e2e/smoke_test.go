package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

func echoFn() functions.Function {
	return functions.FuncOf(functions.Spec{Name: "echo", Help: "echo", ReadOnly: true,
		Args: []functions.Arg{{Name: "msg", Type: functions.TypeString}}},
		func(_ context.Context, a functions.Args) (any, error) {
			return map[string]any{"msg": a.String("msg")}, nil
		})
}

func TestSmokeCall(t *testing.T) {
	svc := startControl(t, "")
	a := startAgent(t, svc, "10.0.0.5_web01", true, echoFn())
	stacktest.WaitFor(t, "agent online", 5*time.Second, func() bool { return stacktest.Online(svc, a.MachineID()) })
	nc := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	m, err := stacktest.Request(nc, a.MachineID(), "echo", []byte(`{"msg":"hi"}`), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(m.Data), `{"msg":"hi"}`; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := m.Header.Get(fleet.HeaderMachine); got != a.MachineID() {
		t.Fatalf("machine header %q", got)
	}
}
