package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestThreatDiscoveryInAnotherMachinesName (SECURITY.md row 42): machine
// B, a raw connection with B's own credentials admitted by the real
// callout, hears the admin's `cc-bench functions` request to machine A
// (any agent may listen to $SRV.INFO.cc-agent.*) and tries to answer it
// in A's name, saying A serves "restart-db":
//
//   - on the request's own reply subject, A's discovery inbox: the broker
//     refuses it (B's error handler is told so);
//   - on the shared discovery inbox, shaped to match the workbench's
//     subscription (_INBOX_cc.<admin>.@srv.@srv.<nonce>): received and
//     ignored, "@srv" being no machine's token;
//   - on its own discovery inbox with a body naming A: not credited to A,
//     and reported as B's answer naming another machine.
//
// Functions lists A with what A's real agent serves, and no "restart-db".
func TestThreatDiscoveryInAnotherMachinesName(t *testing.T) {
	svc := startControl(t, "")
	const a, b = "10.0.42.1_web01", "10.0.42.2_evil"
	startAgent(t, svc, a, true)
	stacktest.RegisterMachine(t, svc, b, map[string]string{"role": "test"})
	refused := make(chan string, 4)
	evil := stacktest.Connect(t, svc.ClientURL(), stacktest.MachineKey(t, b), b, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case refused <- err.Error():
		default:
		}
	}))
	lie, _ := json.Marshal(micro.Info{Type: micro.InfoResponseType, ServiceIdentity: micro.ServiceIdentity{
		Name: fleet.AgentServiceName, Metadata: map[string]string{"machine": a, fleet.AgentFunctionsMeta: `[{"name":"restart-db","read_only":true}]`}}})
	if _, err := evil.Subscribe(fleet.SrvSubject(fleet.SrvInfo, fleet.AgentServiceName, "*"), func(m *nats.Msg) {
		caller, machine, nonce, err := fleet.ParseMachineDiscoveryReply(m.Reply)
		if err != nil || machine != a {
			return // its own request: the lies below answer it
		}
		// In this order on one connection: the broker handles them in
		// order, so the third's arrival proves the first two were dealt
		// with.
		_ = evil.Publish(m.Reply, lie)
		_ = evil.Publish(fleet.DiscoveryInbox(caller)+"."+replyToken+"."+nonce, lie)
		_ = evil.Publish(fleet.MachineDiscoveryInbox(caller, b)+"."+nonce, lie)
	}); err != nil {
		t.Fatal(err)
	}
	if err := evil.Flush(); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitOnline(t, svc, a, b)

	c, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), stacktest.WaitTimeout)
	defer cancel()
	cat, err := c.Functions(ctx, bench.Selector{})
	if err != nil {
		t.Fatal(err)
	}
	if cat.Asked != 2 || !slices.Equal(cat.NoAnswer, []string{b}) ||
		!slices.Equal(cat.Malformed, []string{b + `: its answer names machine "` + a + `"`}) {
		t.Fatalf("asked %d, no answer %v, ignored %q: want A's answer only, B's reported", cat.Asked, cat.NoAnswer, cat.Malformed)
	}
	n := 0
	for _, fn := range cat.Functions {
		if fn.Name == "restart-db" || !slices.Equal(fn.Machines, []string{a}) {
			t.Errorf("%s served by %v: want A's own functions, A alone", fn.Name, fn.Machines)
		}
		if slices.ContainsFunc(fleet.BuiltinFunctions, func(f fleet.BuiltinFunction) bool { return f.Name == fn.Name }) {
			n++
		}
	}
	if n != len(fleet.BuiltinFunctions) {
		t.Errorf("%d of A's %d built-ins listed: %+v", n, len(fleet.BuiltinFunctions), cat.Functions)
	}
	select {
	case why := <-refused:
		if !strings.Contains(strings.ToLower(why), "permissions violation") || !strings.Contains(why, fleet.MachineDiscoveryInbox(c.Key(), a)) {
			t.Errorf("B was told %q: want a permissions violation on A's discovery inbox", why)
		}
	case <-ctx.Done():
		t.Fatal("the broker never refused B's answer on A's discovery inbox")
	}
}

// replyToken is the shared discovery inbox's token, which B puts where
// a machine token goes.
const replyToken = "@srv"
