package e2e

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// A broadcast whose reply subject names one machine runs on that machine
// (fleet.AgentReply answers it there): the audit must record it, as a
// call to that machine, and the control service must not tell the caller
// that no agent answers. Before, the call watcher refused such a reply
// subject (400) and recorded nothing: a call ran unaudited.
func TestAuditBroadcastAimedAtOneMachine(t *testing.T) {
	svc, got := startControlWithCallHook(t)
	a1 := startAgent(t, svc, "10.0.0.1_web01", true, echoFn())
	a2 := startAgent(t, svc, "10.0.0.2_web02", true, echoFn())
	stacktest.WaitFor(t, "agents online", 5*time.Second, func() bool {
		return stacktest.Online(svc, a1.MachineID()) && stacktest.Online(svc, a2.MachineID())
	})
	op := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	key := op.Opts.Nkey
	reply := fleet.CallReply(key, fleet.MachineToken(a1.MachineID()), "aimed", 0)
	sub, err := op.SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(fleet.AllSubject("echo", key))
	m.Reply = reply
	m.Header.Set(fleet.HeaderCallID, "aimed")
	m.Data = []byte(`{"msg":"x"}`)
	if err := op.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	answer, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("web01 did not answer the broadcast aimed at it: %v", err)
	}
	if answer.Header.Get(fleet.HeaderErrorCode) != "" || answer.Header.Get(fleet.HeaderMachine) != a1.MachineID() {
		t.Fatalf("first answer: headers %v body %s, want web01's echo (no refusal)", answer.Header, answer.Data)
	}
	select {
	case r := <-got:
		if r.Function != "echo" || r.OperatorKey != key || len(r.Outcomes) != 1 ||
			r.Outcomes[0].Machine != a1.MachineID() || r.Outcomes[0].Status != fleet.OutcomeOK {
			t.Fatalf("record: %+v, want web01's echo, ok", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no audit record of a call that ran on web01")
	}
}
