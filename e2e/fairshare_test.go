package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// startLimitedAgent starts a registered agent with cfg's limits, serving
// the built-ins and extra, and waits until it is ONLINE.
func startLimitedAgent(t *testing.T, svc *controlsvc.Service, id string, cfg agent.Config, extra ...functions.Function) *agent.Agent {
	t.Helper()
	cfg.URL, cfg.MachineID = svc.ClientURL(), id
	a := startAgentWith(t, svc, cfg, true, nil, extra...)
	waitFor(t, id+" online", 5*time.Second, func() bool { return online(svc, id) })
	return a
}

// errorCode is a reply's error code, 0 for a result.
func errorCode(m *nats.Msg) int {
	if e := fleet.ErrorFromHeader(m.Header.Get(fleet.HeaderErrorCode), m.Header.Get(fleet.HeaderError)); e != nil {
		return e.Code
	}
	return 0
}

// TestThreatOneOperatorCannotStarveAnother (issue 10, finding 7): one
// operator floods an agent with slow calls; it gets at most half the
// agent's slots (the rest of its calls are refused 503 at once), and
// another operator's call still runs.
func TestThreatOneOperatorCannotStarveAnother(t *testing.T) {
	svc := startControl(t, "")
	release := make(chan struct{})
	defer close(release)
	work := stacktest.Func("work", func(ctx context.Context, a functions.Args) (any, error) {
		if a.Bool("block") {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return "ok", nil
	}, functions.Arg{Name: "block", Type: "bool"})
	a := startLimitedAgent(t, svc, "10.0.0.1_web01", agent.Config{MaxConcurrent: 4}, work)
	flooder := operatorConn(t, svc.ClientURL(), newOperator(t, svc, "flooder", fleet.RoleAdmin))
	other := operatorConn(t, svc.ClientURL(), newOperator(t, svc, "other", fleet.RoleAdmin))

	replies, err := flooder.SubscribeSync(fleet.OperatorInbox(flooder.Opts.Nkey) + ".>")
	if err != nil {
		t.Fatal(err)
	}
	const flood = 10
	for range flood {
		if err := stacktest.Send(flooder, a.MachineID(), "work", []byte(`{"block":true}`)); err != nil {
			t.Fatal(err)
		}
	}
	// All but its share (2 of 4 slots) are refused at once.
	for i := range flood - 2 {
		m, err := replies.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("refusal %d: %v", i, err)
		}
		if errorCode(m) != fleet.CodeUnavailable {
			t.Fatalf("refusal %d: got %q %v, want 503", i, m.Data, m.Header)
		}
	}
	m, err := stacktest.Request(other, a.MachineID(), "work", []byte(`{"block":false}`), 5*time.Second)
	if err != nil || errorCode(m) != 0 || string(m.Data) != `"ok"` {
		t.Fatalf("the other operator's call during the flood: %v %q %v", err, m.Data, m.Header)
	}
}

// TestThreatCallerRateLimited (issue 10, finding 5): one operator's calls
// beyond its rate on an agent are refused 429 with a message that says so;
// another operator is not affected. The agent's clock is frozen, so the
// bucket does not refill during the test.
func TestThreatCallerRateLimited(t *testing.T) {
	svc := startControl(t, "")
	frozen := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	a := startLimitedAgent(t, svc, "10.0.0.1_web01", agent.Config{CallerRate: 1, CallerBurst: 5, Now: func() time.Time { return frozen }})
	busy := operatorConn(t, svc.ClientURL(), newOperator(t, svc, "busy", fleet.RoleViewer))
	other := operatorConn(t, svc.ClientURL(), newOperator(t, svc, "other", fleet.RoleViewer))
	for i := range 5 {
		m, err := stacktest.Request(busy, a.MachineID(), "current-load", nil, 5*time.Second)
		if err != nil || errorCode(m) != 0 {
			t.Fatalf("call %d within the burst: %v %v", i, err, m.Header)
		}
	}
	m, err := stacktest.Request(busy, a.MachineID(), "current-load", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if errorCode(m) != fleet.CodeTooManyRequests {
		t.Fatalf("the call past the burst: got %q %v, want 429", m.Data, m.Header)
	}
	t.Logf("refused: %s", m.Header.Get(fleet.HeaderError))
	if m, err := stacktest.Request(other, a.MachineID(), "current-load", nil, 5*time.Second); err != nil || errorCode(m) != 0 {
		t.Fatalf("another operator: %v %v", err, m.Header)
	}
}
