package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestThreatDiscoveryInAnotherMachinesName (SECURITY.md row 42): machine
// B, a raw connection with B's own credentials admitted by the real
// callout, tries to answer the admin's `cc-bench functions` request to
// machine A in A's name, saying A serves "restart-db":
//
//   - it subscribes to A's instance subject ($SRV.INFO.cc-agent.<A's
//     token>) to hear A's request: the broker refuses the subscription;
//   - from its own request it learns the nonce, and answers on A's
//     discovery inbox: the broker refuses it;
//   - on the shared discovery inbox, shaped to match the workbench's
//     subscription (_INBOX_cc.<admin>.@srv.@srv.<nonce>): received and
//     ignored, "@srv" being no machine's token;
//   - on its own discovery inbox with a body naming A: not credited to A,
//     and reported as B's answer naming another machine.
//
// B's error handler is told of both refusals. Functions lists A with
// what A's real agent serves, and no "restart-db".
func TestThreatDiscoveryInAnotherMachinesName(t *testing.T) {
	svc := startControl(t, "")
	const a, b = "10.0.42.1_web01", "10.0.42.2_evil"
	startAgent(t, svc, a, true)
	stacktest.RegisterMachine(t, svc, b, map[string]string{"role": "test"})
	refused := make(chan string, 8)
	evil := stacktest.Connect(t, svc.ClientURL(), stacktest.MachineKey(t, b), b, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case refused <- err.Error():
		default:
		}
	}))
	lie, _ := json.Marshal(micro.Info{Type: micro.InfoResponseType, ServiceIdentity: micro.ServiceIdentity{
		Name: fleet.AgentServiceName, Metadata: map[string]string{"machine": a, fleet.AgentFunctionsMeta: `[{"name":"restart-db","read_only":true}]`}}})
	var heard atomic.Bool
	if _, err := evil.Subscribe(fleet.SrvSubject(fleet.SrvInfo, fleet.AgentServiceName, fleet.AgentInstanceID(a)), func(*nats.Msg) {
		heard.Store(true)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := evil.Subscribe(fleet.SrvSubject(fleet.SrvInfo, fleet.AgentServiceName, fleet.AgentInstanceID(b)), func(m *nats.Msg) {
		caller, _, nonce, err := fleet.ParseMachineDiscoveryReply(m.Reply)
		if err != nil {
			return
		}
		// In this order on one connection: the broker handles them in
		// order, so the third's arrival proves the first two were dealt
		// with.
		_ = evil.Publish(fleet.MachineDiscoveryInbox(caller, a)+"."+nonce, lie)
		_ = evil.Publish(fleet.DiscoveryInbox(caller)+"."+replyToken+"."+nonce, lie)
		_ = evil.Publish(m.Reply, lie)
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
	// Both refusals name A's subjects.
	want := map[string]string{
		"subscription": fleet.SrvSubject(fleet.SrvInfo, fleet.AgentServiceName, fleet.AgentInstanceID(a)),
		"publish":      fleet.MachineDiscoveryInbox(c.Key(), a),
	}
	for len(want) > 0 {
		select {
		case why := <-refused:
			for kind, subj := range want {
				if strings.Contains(strings.ToLower(why), "permissions violation for "+kind) && strings.Contains(why, subj) {
					delete(want, kind)
				}
			}
		case <-ctx.Done():
			t.Fatalf("the broker never refused B's %v", want)
		}
	}
	if heard.Load() {
		t.Error("B heard the request to A")
	}
}

// replyToken is the shared discovery inbox's token, which B puts where
// a machine token goes.
const replyToken = "@srv"
