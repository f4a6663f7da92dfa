package agent_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestRefusalWhileControlServiceDown: behind a stand-alone broker whose
// control service is stopped, the broker refuses every connection at its
// auth timeout. An accepted machine's agent logs that no control service
// answered, not that the machine should be accepted; once the control
// service is back, it connects. A machine nobody accepted, refused by a
// running control service, is told how to be accepted.
func TestRefusalWhileControlServiceDown(t *testing.T) {
	data := t.TempDir()
	b := stacktest.StartBroker(t, data)
	svc := stacktest.StartControl(t, stacktest.WithDataDir(data), stacktest.WithBroker(b.ClientURL()))
	const id = "10.0.0.7_accepted"
	stacktest.RegisterMachine(t, svc, id, nil)
	svc.Close()

	var log stacktest.Buffer
	a := stacktest.NewAgentWith(t, agent.Config{URL: b.ClientURL(), MachineID: id, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	stacktest.Spawn(t, a)
	stacktest.WaitFor(t, "the agent to log the refusal", 20*time.Second, func() bool { return strings.Contains(log.String(), "retrying") })
	got := log.String()
	if !strings.Contains(got, "the broker is up but no control service answered: cc-control is down or not connected to this broker") ||
		strings.Contains(got, "accept_with") || strings.Contains(got, "refused this machine") {
		t.Errorf("accepted machine, control service down, logged:\n%s", got)
	}

	svc = stacktest.StartControl(t, stacktest.WithDataDir(data), stacktest.WithBroker(b.ClientURL()))
	stacktest.WaitOnline(t, svc, id)

	var log2 stacktest.Buffer
	const stranger = "10.0.0.8_stranger"
	s := stacktest.NewAgentWith(t, agent.Config{URL: b.ClientURL(), MachineID: stranger, Logger: slog.New(slog.NewTextHandler(&log2, nil))})
	stacktest.Spawn(t, s)
	stacktest.WaitFor(t, "the stranger to log its refusal", 20*time.Second, func() bool { return strings.Contains(log2.String(), "retrying") })
	if got := log2.String(); !strings.Contains(got, "the broker refused this machine") || !strings.Contains(got, "accept_with=\"cc-bench machines accept "+stranger+"\"") ||
		strings.Contains(got, "no control service") {
		t.Errorf("unknown machine, control service up, logged:\n%s", got)
	}
}
