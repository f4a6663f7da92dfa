package e2e

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
)

// TestAgentsLearnTheReconnectWindow: the control service sizes the
// fleet's reconnect window from the machines ONLINE and tells every
// agent; an agent takes it; an operator may read it but not forge it.
func TestAgentsLearnTheReconnectWindow(t *testing.T) {
	svc := stacktest.StartControlWith(t, controlsvc.Config{
		DataDir: t.TempDir(), Broker: broker.Config{Listen: "127.0.0.1:0"},
		ReconnectRate: 1, HintInterval: 200 * time.Millisecond, Logger: stacktest.Logger(),
	})
	a := startAgentAt(t, svc, svc.ClientURL(), "10.5.0.1_web01", true, nil)
	startAgentAt(t, svc, svc.ClientURL(), "10.5.0.2_web02", true, nil)
	// Two machines at one authorisation per second, with a quarter of
	// headroom: 2.5 s.
	stacktest.WaitFor(t, "the agent to learn a 2.5 s window", 10*time.Second, func() bool {
		return a.ReconnectWindow() == 2500*time.Millisecond
	})
	if got := controlsvc.ReconnectWindow(10000, 1000); got != 12500*time.Millisecond {
		t.Errorf("ReconnectWindow(10000, 1000/s) = %s, want 12.5s", got)
	}
	if got := controlsvc.ReconnectWindow(0, 1000); got != 500*time.Millisecond {
		t.Errorf("ReconnectWindow(0, …) = %s, want the 0.5 s floor", got)
	}

	// The hint comes from the control service only: an admin operator
	// cannot publish one.
	nc := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	errs := make(chan error, 1)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	})
	b, _ := json.Marshal(fleet.AgentHint{ReconnectWindowMS: 1})
	if err := nc.Publish(fleet.AgentHintSubject, b); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("forged hint: got %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an operator published a hint without a permissions violation")
	}
	time.Sleep(300 * time.Millisecond)
	if got := a.ReconnectWindow(); got != 2500*time.Millisecond {
		t.Fatalf("after a forged hint the agent's window is %s", got)
	}
}
