package e2e

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/broker"
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
	stacktest.WaitFor(t, id+" online", 5*time.Second, func() bool { return stacktest.Online(svc, id) })
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

	replies, err := flooder.SubscribeSync(fleet.OperatorInboxWildcard(flooder.Opts.Nkey))
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

// TestThreatBroadcastFloodRepliesBounded (review 2, F5): a viewer floods
// a read-only broadcast. Each agent answers the calls within the viewer's
// rate and at most RefusalAnswerBurst refusals (429) while its clock
// stands still, and drops the rest unanswered, so the replies the flood
// draws are bounded by agents × (burst + refusal answers), not by
// agents × broadcasts. Another operator's broadcast is still answered by
// every agent.
func TestThreatBroadcastFloodRepliesBounded(t *testing.T) {
	svc := startControl(t, "")
	frozen := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	const agents, burst, flood = 5, 5, 2000
	var fleetAgents []*agent.Agent
	for i := range agents {
		id := "10.0.3." + strconv.Itoa(i+1) + "_bc" + strconv.Itoa(i)
		fleetAgents = append(fleetAgents, startLimitedAgent(t, svc, id, agent.Config{CallerRate: 1, CallerBurst: burst,
			Now: func() time.Time { return frozen }}))
	}
	viewer := operatorConn(t, svc.ClientURL(), newOperator(t, svc, "flooder", fleet.RoleViewer))
	other := operatorConn(t, svc.ClientURL(), newOperator(t, svc, "other", fleet.RoleViewer))
	vk := viewer.Opts.Nkey
	var total, ok, tooMany, othersCodes atomic.Int64
	sub, err := viewer.Subscribe(fleet.OperatorInboxWildcard(vk), func(m *nats.Msg) {
		total.Add(1)
		switch errorCode(m) {
		case 0:
			ok.Add(1)
		case fleet.CodeTooManyRequests:
			tooMany.Add(1)
		default:
			othersCodes.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	for i := range flood {
		call := "flood" + strconv.Itoa(i)
		if err := viewer.PublishRequest(fleet.AllSubject("current-load", vk), fleet.CallReply(vk, fleet.ReplyToAll, call, 0), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := viewer.Flush(); err != nil {
		t.Fatal(err)
	}
	// Every agent handles broadcasts in order on one subscription: once
	// it answers the other operator's broadcast, sent after the flood, it
	// has handled the whole flood, and its replies to the viewer, sent
	// first on the same connection, are queued to the viewer before the
	// viewer's Flush below returns.
	replies, err := stacktest.Broadcast(other, "current-load", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range agents {
		m, err := replies.NextMsg(10 * time.Second)
		if err != nil || errorCode(m) != 0 {
			t.Fatalf("the other operator's broadcast after the flood: reply %d: %v %v", i, err, m)
		}
	}
	if err := viewer.Flush(); err != nil {
		t.Fatal(err)
	}
	// Calls let through run on their own goroutines: wait for their results.
	stacktest.WaitFor(t, "the admitted calls' results", 10*time.Second, func() bool { return ok.Load() >= agents*burst })
	var dropped int64
	for _, a := range fleetAgents {
		dropped += a.RefusalsDropped()
	}
	limit := int64(agents * (burst + agent.RefusalAnswerBurst))
	t.Logf("%d broadcasts on %d agents: %d replies to the viewer (%d results, %d refused 429, %d other), %d refusals dropped",
		flood, agents, total.Load(), ok.Load(), tooMany.Load(), othersCodes.Load(), dropped)
	if total.Load() > limit {
		t.Fatalf("the flood drew %d replies, want at most agents × (burst + refusal answers) = %d", total.Load(), limit)
	}
	if ok.Load() != agents*burst || tooMany.Load() != agents*agent.RefusalAnswerBurst {
		t.Fatalf("got %d results and %d 429s, want %d and %d: refusals within the budget are answered",
			ok.Load(), tooMany.Load(), agents*burst, agents*agent.RefusalAnswerBurst)
	}
	if want := int64(agents * (flood - burst - agent.RefusalAnswerBurst)); dropped != want {
		t.Fatalf("agents dropped %d refusals, want %d", dropped, want)
	}
}

// callWithID sends copy n of call id to fn on machine, as the workbench
// does (the id in fleet.HeaderCallID and in the reply subject), and
// returns its reply.
func callWithID(nc *nats.Conn, machine, fn, id string, n int, body []byte, timeout time.Duration) (*nats.Msg, error) {
	key := nc.Opts.Nkey
	reply := fleet.CallReply(key, fleet.MachineToken(machine), id, n)
	sub, err := nc.SubscribeSync(reply)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	m := &nats.Msg{Subject: fleet.FnSubject(machine, fn, key), Reply: reply, Data: body, Header: nats.Header{}}
	m.Header.Set(fleet.HeaderCallID, id)
	if err := nc.PublishMsg(m); err != nil {
		return nil, err
	}
	return sub.NextMsg(timeout)
}

// sendWithID publishes a call with call id id (copy n) and does not wait
// for its answer.
func sendWithID(nc *nats.Conn, machine, fn, id string, n int, body []byte) error {
	key := nc.Opts.Nkey
	m := &nats.Msg{Subject: fleet.FnSubject(machine, fn, key), Reply: fleet.CallReply(key, fleet.MachineToken(machine), id, n), Data: body, Header: nats.Header{}}
	m.Header.Set(fleet.HeaderCallID, id)
	return nc.PublishMsg(m)
}

// TestThreatOthersCannotSilenceBusy (review 3, R3): two viewers fill an
// agent with slow read-only calls, each within its share. The admin's
// calls are then refused 503 "busy", and every one is answered, beyond
// the admin's refusal answers (RefusalAnswerBurst, with the clock frozen
// so none refill): the viewers did the filling, not the admin, so they
// cannot turn the admin's "busy" into silence. A call answered 503 holds
// its final answer: a later copy of it (same call id) does not run behind
// it once a slot frees (review 4: it did, while the caller was told busy).
func TestThreatOthersCannotSilenceBusy(t *testing.T) {
	svc := stacktest.StartControlWith(t, controlsvc.Config{
		DataDir:           t.TempDir(),
		Broker:            broker.Config{Listen: "127.0.0.1:0", PingInterval: time.Second, MaxPingsOut: 2},
		ResyncInterval:    5 * time.Second,
		Logger:            stacktest.Logger().With("side", "control"),
		ReadOnlyFunctions: append(append([]string{}, controlsvc.DefaultReadOnlyFunctions...), "work"),
	})
	frozen := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	started, release := make(chan struct{}, 2), make(chan struct{})
	defer close(release)
	work := stacktest.Func("work", func(ctx context.Context, a functions.Args) (any, error) {
		if a.Bool("block") {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return "ok", nil
	}, functions.Arg{Name: "block", Type: "bool"})
	a := startLimitedAgent(t, svc, "10.0.0.1_web01", agent.Config{MaxConcurrent: 2, Now: func() time.Time { return frozen }}, work)
	for _, name := range []string{"v1", "v2"} {
		v := operatorConn(t, svc.ClientURL(), newOperator(t, svc, name, fleet.RoleViewer))
		if err := stacktest.Send(v, a.MachineID(), "work", []byte(`{"block":true}`)); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("the viewers' slow calls did not start")
		}
	}
	admin := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	for i := range agent.RefusalAnswerBurst + 5 {
		m, err := callWithID(admin, a.MachineID(), "work", "busy"+strconv.Itoa(i), 0, nil, 2*time.Second)
		if err != nil {
			t.Fatalf("admin call %d on the full agent: %v, want a 503 answer (not silence)", i, err)
		}
		if errorCode(m) != fleet.CodeUnavailable {
			t.Fatalf("admin call %d on the full agent: got %q %v, want 503", i, m.Data, m.Header)
		}
	}
	if n := a.RefusalsDropped(); n != 0 {
		t.Fatalf("the agent dropped %d refusals, want 0", n)
	}
	// A call answered 503 holds a final answer: a later copy of it (the
	// broadcast copy queued behind the machine's, or a workbench retry)
	// must not run behind that answer, even once a slot frees.
	const id = "answered"
	m, err := callWithID(admin, a.MachineID(), "work", id, 0, nil, 2*time.Second)
	if err != nil || errorCode(m) != fleet.CodeUnavailable {
		t.Fatalf("the call, on the full agent: %v %v, want 503", err, m)
	}
	release <- struct{}{} // one viewer's call ends, freeing its slot
	if err := sendWithID(admin, a.MachineID(), "work", id, 1, []byte(`{"block":true}`)); err != nil {
		t.Fatal(err)
	}
	// The agent handles the machine's subject in order: had the copy run,
	// it would hold the admin's one slot (its share) and this call would
	// be refused over its share.
	// Each try is a call of its own: a try answered 503 (the slot not
	// free yet) holds its id, and a copy of it would be ignored.
	tries := 0
	stacktest.WaitFor(t, "a later call runs in the freed slot", 5*time.Second, func() bool {
		tries++
		m, err := callWithID(admin, a.MachineID(), "work", "after"+strconv.Itoa(tries), 0, nil, time.Second)
		if err != nil {
			t.Logf("later call: %v", err)
			return false
		}
		if errorCode(m) == fleet.CodeUnavailable && strings.Contains(m.Header.Get(fleet.HeaderError), "its share") {
			t.Fatalf("the copy of a call answered 503 ran: %s", m.Header.Get(fleet.HeaderError))
		}
		return errorCode(m) == 0 && string(m.Data) == `"ok"`
	})
}
