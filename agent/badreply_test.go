package agent_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// levelCounter counts the log lines at WARN and at DEBUG.
type levelCounter struct{ warn, debug *atomic.Int64 }

func (h levelCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h levelCounter) Handle(_ context.Context, r slog.Record) error {
	switch r.Level {
	case slog.LevelWarn:
		h.warn.Add(1)
	case slog.LevelDebug:
		h.debug.Add(1)
	}
	return nil
}
func (h levelCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h levelCounter) WithGroup(string) slog.Handler      { return h }

// TestBadReplyFloodCostsBoundedLog: a viewer may broadcast, and picks the
// reply subject. 500 broadcasts with a reply subject no agent may answer
// on were 500 WARN lines on every agent; now they cost the caller's rate
// like any call and are logged at WARN only within its refusal budget
// (the agent's clock is frozen, so the budget never refills), the rest at
// DEBUG.
func TestBadReplyFloodCostsBoundedLog(t *testing.T) {
	svc := stacktest.StartControl(t)
	const id = "10.0.8.2_logs"
	frozen := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	var warn, debug atomic.Int64
	runAgent(t, svc, id, agent.Config{Now: func() time.Time { return frozen },
		Logger: slog.New(levelCounter{&warn, &debug})})
	stacktest.WaitOnline(t, svc, id)
	base := warn.Load() + debug.Load()
	baseWarn := warn.Load()

	vkp := stacktest.NewKey(t)
	stacktest.AddOperator(t, svc, "v", fleet.RoleViewer, vkp)
	viewer := stacktest.Connect(t, svc.ClientURL(), vkp, "viewer")
	key := stacktest.Pub(t, vkp)
	const n = 500
	for range n {
		m := nats.NewMsg(fleet.AllSubject(fleet.FnCurrentLoad, key))
		m.Reply = fleet.OperatorInbox(key) + ".@nobody.x"
		if err := viewer.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := viewer.Flush(); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitFor(t, "the agent to log every refused call", 10*time.Second, func() bool {
		return warn.Load()+debug.Load()-base >= n
	})
	if got := warn.Load() - baseWarn; got > agent.RefusalAnswerBurst {
		t.Fatalf("%d broadcasts with a reply subject nobody may answer on: %d WARN lines, want at most %d", n, got, agent.RefusalAnswerBurst)
	}
}
