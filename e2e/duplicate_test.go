package e2e

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestDuplicateAgentNewestWins: two real agents run with the same machine
// id and key. When the second connects, the control service closes the
// first one's connection (newest wins), says so in its log and records it
// in the audit; the second serves the machine's calls alone.
func TestDuplicateAgentNewestWins(t *testing.T) {
	logs := &stacktest.Buffer{}
	svc := stacktest.StartControlWith(t, controlsvc.Config{
		DataDir: t.TempDir(),
		Broker:  broker.Config{Listen: "127.0.0.1:0", PingInterval: time.Second, MaxPingsOut: 2},
		Logger:  slog.New(slog.NewTextHandler(logs, nil)),
	})
	const id = "10.0.0.8_twin"
	first := stacktest.StartAgent(t, svc, id, nil, stacktest.Result("who", "first"))
	firstConn := first.Conn()
	second := stacktest.NewAgent(t, svc, id, stacktest.Result("who", "second"))
	if err := second.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitFor(t, "the first agent's connection to be closed", 10*time.Second, func() bool {
		return firstConn.Stats().Reconnects > 0
	})
	// The first agent would reconnect and win in turn (each round logged
	// and audited); stopping it leaves the second serving. The second may
	// have just been closed by the first's last reconnection and come
	// back a moment later: wait until it answers.
	first.Close()
	c, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	var res *bench.Results
	stacktest.WaitFor(t, "the second agent answering alone", 15*time.Second, func() bool {
		res, err = c.Call(ctx, "who", nil, bench.CallOptions{Machines: []string{id}, Timeout: 2 * time.Second})
		return err == nil && len(res.Replied) == 1
	})
	if string(res.Replied[0].Result) != `"second"` || len(res.Unexpected) != 0 {
		t.Fatalf("call after the first agent was replaced: %v %+v\ncontrol service log:\n%s", err, res, logs)
	}

	const said = "its older connection"
	stacktest.WaitFor(t, "the audit record of the closed connection", 10*time.Second, func() bool {
		recs, err := c.Audit(ctx, time.Time{}, 0)
		if err != nil {
			return false
		}
		for _, r := range recs {
			if r.Kind == fleet.AuditRefused && r.Name == id && strings.Contains(r.Reason, said) && strings.Contains(r.Reason, "same id and key") {
				return true
			}
		}
		return false
	})
	stacktest.WaitFor(t, "the log line", 5*time.Second, func() bool {
		return strings.Contains(logs.String(), "closed a machine's older connection") && strings.Contains(logs.String(), id)
	})
}
