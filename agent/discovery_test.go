package agent_test

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestDiscoveryAnswersOnlyOnDiscoveryInbox: whoever may ask micro
// discovery ($SRV, an admin) picks the reply subject, and an agent
// answers only under a discovery inbox (fleet.CheckDiscoveryReply), not
// relying on the broker alone: the broker lets a machine publish on any
// operator's call replies naming it (_INBOX_cc.<key>.<its token>.…), so
// an answer aimed there would land among another call's replies as if
// the machine had answered that call. A reply subject the broker would
// refuse (a presence event) is not even attempted. The right inbox is
// answered, in micro's v1 schemas; so is the machine's own discovery
// inbox (fleet.MachineDiscoveryInbox, asked of its instance id, which is
// its token), and not another machine's (the broker would refuse it).
func TestDiscoveryAnswersOnlyOnDiscoveryInbox(t *testing.T) {
	svc := stacktest.StartControl(t)
	const id = "10.0.8.1_srv"
	tok := fleet.MachineToken(id)
	forbidden := fleet.PresenceEventSubject(fleet.EventJoined, "10.0.8.66_forged")
	var attempted atomic.Bool
	runAgent(t, svc, id, agent.Config{NATSOptions: []nats.Option{stacktest.WithHooks(
		stacktest.Hook{Sent: forbidden, Fn: func() { attempted.Store(true) }},
		stacktest.Hook{Sent: "10~0~8~2_other.@srv.", Fn: func() { attempted.Store(true) }},
	)}})

	akp, err := nkeys.FromSeed(stacktest.AdminSeed(t, svc))
	if err != nil {
		t.Fatal(err)
	}
	key := stacktest.Pub(t, akp)
	admin := stacktest.Connect(t, svc.ClientURL(), akp, "admin-srv")
	// Everything the agent may send the admin arrives on this one
	// subscription, in the order the agent sent it.
	sub, err := admin.SubscribeSync(fleet.OperatorInbox(key) + ".>")
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{fleet.SrvPing: micro.PingResponseType, fleet.SrvInfo: micro.InfoResponseType, fleet.SrvStats: micro.StatsResponseType}
	for _, verb := range fleet.SrvVerbs() {
		ask := fleet.SrvSubject(verb, fleet.AgentServiceName, "")
		one := fleet.SrvSubject(verb, fleet.AgentServiceName, fleet.AgentInstanceID(id))
		for _, q := range []struct{ ask, reply string }{
			{ask, fleet.CallReply(key, tok, "victim-"+verb, 0)}, // another call's replies
			{ask, forbidden},
			{one, fleet.MachineDiscoveryInbox(key, "10.0.8.2_other") + "." + verb}, // another machine's
			{ask, fleet.DiscoveryInbox(key) + "." + verb},
			{one, fleet.MachineDiscoveryInbox(key, id) + "." + verb},
		} {
			if err := admin.PublishRequest(q.ask, q.reply, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Each verb's answers come in the order asked; the verbs' in any.
	answered := map[string]bool{}
	for len(answered) < 2*len(types) {
		m, err := sub.NextMsg(stacktest.WaitTimeout)
		if err != nil {
			t.Fatalf("discovery answered for %v only: %v", answered, err)
		}
		verb, ok := strings.CutPrefix(m.Subject, fleet.DiscoveryInbox(key)+".")
		if !ok {
			verb, ok = strings.CutPrefix(m.Subject, fleet.MachineDiscoveryInbox(key, id)+".")
		}
		if !ok || types[verb] == "" || answered[m.Subject] {
			t.Fatalf("the agent answered discovery on %s (want only %s.<verb> and %s.<verb>, once): %s", m.Subject, fleet.DiscoveryInbox(key), fleet.MachineDiscoveryInbox(key, id), m.Data)
		}
		answered[m.Subject] = true
		var got struct {
			Type, Name string
			Metadata   map[string]string
		}
		if err := json.Unmarshal(m.Data, &got); err != nil || got.Type != types[verb] || got.Name != fleet.AgentServiceName || got.Metadata["machine"] != id {
			t.Errorf("%s answer: %v %s", verb, err, m.Data)
		}
	}
	// Each forbidden answer would have been written before its verb's
	// right one.
	if attempted.Load() {
		t.Errorf("the agent published a discovery answer on %s or on another machine's discovery inbox", forbidden)
	}
}
