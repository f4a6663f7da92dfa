package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// Confused deputies (issue 10, findings 1 to 3). In NATS the requester picks
// the reply subject, so whoever answers can be aimed at any subject it may
// publish on. These tests aim every identity's answers at the subjects that
// must stay out of reach, with real clients, and check that nothing lands.

// compromisedAgent connects with a registered machine's own key, as an
// attacker holding that key would, and answers every request it receives
// with body, on the reply subject it was given: what a hostile agent does.
func compromisedAgent(t *testing.T, svc *controlsvc.Service, id string, body []byte) (*nats.Conn, chan error) {
	t.Helper()
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	if _, err := svc.Registry().AddMachine(id, pub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	nc, errs := permConn(t, svc.ClientURL(), kp, id)
	answer := func(m *nats.Msg) {
		if m.Reply != "" {
			_ = m.Respond(body)
		}
	}
	for _, subj := range []string{fleet.MachineCallsWildcard(fleet.MachineToken(id)), fleet.BroadcastCallsWildcard, "$SRV.PING", "$SRV.INFO.cc-agent", "$SRV.STATS.cc-agent"} {
		if _, err := nc.Subscribe(subj, answer); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitFor(t, id+" online", 5*time.Second, func() bool { return stacktest.Online(svc, id) })
	return nc, errs
}

// spy reads, with the control service's own FLEET user (which may read
// every subject), whatever arrives on the subjects given.
type spy struct {
	mu   sync.Mutex
	seen []string
}

func startSpy(t *testing.T, svc *controlsvc.Service, subjects ...string) *spy {
	t.Helper()
	nc, err := connectAs(svc.ClientURL(), svc.Keys().Fleet, "spy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s := &spy{}
	for _, subj := range subjects {
		if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
			s.mu.Lock()
			s.seen = append(s.seen, m.Subject+" "+string(m.Data))
			s.mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return s
}

// within waits up to d for anything to have arrived, and returns it.
func (s *spy) within(d time.Duration) []string {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		n := len(s.seen)
		s.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// TestThreatNoReplyReachesForbiddenSubjects is the general property: any
// identity (viewer, admin, a compromised agent, a real agent, the control
// service), publishing any subject it may, with any reply subject the
// requester chooses, never makes a message land on a control subject, an
// agent-only subject, presence or a call subject it could not publish
// itself. Findings 1 and 2 are two of its cases: a viewer's $SRV.PING
// aimed at the admin's operators.add with a compromised agent answering,
// and a viewer's own machines.list aimed at the admin's machines.import.
func TestThreatNoReplyReachesForbiddenSubjects(t *testing.T) {
	svc := startControl(t, "")
	admin := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	viewer := operatorConn(t, svc.ClientURL(), newOperator(t, svc, "victor", fleet.RoleViewer))
	real := startAgent(t, svc, "10.0.0.1_web01", true, echoFn())
	stacktest.WaitFor(t, "agent online", 5*time.Second, func() bool { return stacktest.Online(svc, real.MachineID()) })
	mkp, _ := nkeys.CreateUser()
	mallory, _ := mkp.PublicKey()
	evil, evilErrs := compromisedAgent(t, svc, "10.6.6.6_evil", fmt.Appendf(nil, `{"name":"mallory","key":%q,"role":"admin"}`, mallory))
	_ = evil

	adminKey, viewerKey := admin.Opts.Nkey, viewer.Opts.Nkey
	targets := []string{
		fleet.CtlSubject(adminKey, fleet.OpOperatorsAdd),
		fleet.CtlSubject(adminKey, fleet.OpMachinesImport),
		fleet.CtlSubject(adminKey, fleet.OpMachinesRemove),
		fleet.AgentHintSubject,
		fleet.PresenceEventSubject(fleet.EventLeft, real.MachineID()),
		fleet.FnSubject(real.MachineID(), "echo", adminKey),
		fleet.AllSubject("echo", adminKey),
	}
	// Nobody publishes on these in this test but through a reply.
	sp := startSpy(t, svc, targets...)

	type sender struct {
		who      string
		nc       *nats.Conn
		subjects []string
	}
	asks := func(key string, fns ...string) []string {
		out := []string{"$SRV.PING", "$SRV.INFO.cc-agent", "$SRV.STATS", fleet.PresenceSnapshotSubject,
			fleet.CtlSubject(key, fleet.OpWhoAmI), fleet.CtlSubject(key, fleet.OpMachinesList), fleet.CtlSubject(key, fleet.OpMachinesPending),
			fleet.CtlSubject(key, fleet.OpPresenceSnapshot)}
		for _, fn := range fns {
			out = append(out, fleet.FnSubject(real.MachineID(), fn, key), fleet.FnSubject("10.6.6.6_evil", fn, key), fleet.AllSubject(fn, key))
		}
		return out
	}
	senders := []sender{
		{"viewer", viewer, asks(viewerKey, "current-load")},
		{"admin", admin, asks(adminKey, "current-load")},
	}
	for _, s := range senders {
		for _, subj := range s.subjects {
			for _, reply := range targets {
				if err := s.nc.PublishRequest(subj, reply, []byte(`{"msg":"x"}`)); err != nil {
					t.Fatalf("%s publish %s: %v", s.who, subj, err)
				}
			}
		}
		if err := s.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if got := sp.within(time.Second); len(got) > 0 {
		t.Fatalf("%d messages reached forbidden subjects, first: %q", len(got), got[0])
	}
	// The compromised agent tried, and the broker refused it.
	select {
	case err := <-evilErrs:
		t.Logf("compromised agent refused: %v", err)
	case <-time.After(2 * time.Second):
		t.Fatal("the compromised agent answered nowhere: it was sent nothing?")
	}
	if _, ok := svc.Registry().OperatorByKey(mallory); ok {
		t.Fatal("mallory was made an operator")
	}
	if _, ok := svc.Registry().Machine(real.MachineID()); !ok {
		t.Fatal("the real machine was removed")
	}
	// The workbench still works for both operators.
	for _, nc := range []*nats.Conn{admin, viewer} {
		if _, err := stacktest.Request(nc, real.MachineID(), "current-load", nil, 3*time.Second); err != nil {
			t.Fatalf("a normal call afterwards: %v", err)
		}
	}
}

// TestThreatViewerCannotMakeControlServiceImport is finding 2 exactly: a
// viewer asks for its own machines.list with the reply subject set to the
// admin's machines.import, again and again while the admin removes a
// machine; the removed machine stays removed and no import is recorded.
func TestThreatViewerCannotMakeControlServiceImport(t *testing.T) {
	svc := startControl(t, "")
	admin := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	viewer := operatorConn(t, svc.ClientURL(), newOperator(t, svc, "victor", fleet.RoleViewer))
	a := startAgent(t, svc, "10.0.0.7_owned", true)
	stacktest.WaitFor(t, "agent online", 5*time.Second, func() bool { return stacktest.Online(svc, a.MachineID()) })
	sp := startSpy(t, svc, fleet.CtlSubject(admin.Opts.Nkey, fleet.OpMachinesImport))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			_ = viewer.PublishRequest(fleet.CtlSubject(viewer.Opts.Nkey, fleet.OpMachinesList), fleet.CtlSubject(admin.Opts.Nkey, fleet.OpMachinesImport), nil)
			_ = viewer.FlushTimeout(time.Second)
		}
	}()
	ctl(t, admin, fleet.OpMachinesRemove, fleet.MachineRequest{ID: a.MachineID()}, nil)
	got := sp.within(time.Second)
	cancel()
	<-done
	if len(got) > 0 {
		t.Fatalf("the control service answered onto the admin's machines.import: %q", got[0])
	}
	if _, ok := svc.Registry().Machine(a.MachineID()); ok {
		t.Fatal("the removed machine is back in the registry")
	}
}

// TestThreatAgentCannotAnswerForOthers is finding 3: a compromised agent
// answers every broadcast "no pending patches" in the names of the other
// machines (on their reply subjects, and with their names in Cc-Machine).
// The broker refuses the first; the second counts for the compromised
// machine only. Every real machine's real answer is what the workbench and
// the audit report.
func TestThreatAgentCannotAnswerForOthers(t *testing.T) {
	svc, records := startControlWithCallHook(t)
	var victims []string
	for i := range 5 {
		id := fmt.Sprintf("10.0.1.%d_web%d", i+1, i+1)
		startAgent(t, svc, id, true, stacktest.Result("patches", map[string]int{"pending": 10 + i}))
		victims = append(victims, id)
	}
	for _, id := range victims {
		stacktest.WaitFor(t, id+" online", 5*time.Second, func() bool { return stacktest.Online(svc, id) })
	}
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	const evil = "10.6.6.6_evil"
	if _, err := svc.Registry().AddMachine(evil, pub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	nc, errs := permConn(t, svc.ClientURL(), kp, evil)
	forge := func(m *nats.Msg) {
		r, err := fleet.ParseCallReply(m.Reply)
		if err != nil {
			return
		}
		for _, v := range victims {
			f := nats.NewMsg(fleet.CallReply(r.Caller, fleet.MachineToken(v), r.Call, 0))
			f.Header.Set(fleet.HeaderMachine, v)
			f.Data = []byte(`{"pending":0}`)
			_ = nc.PublishMsg(f)
			// And on its own subject, claiming to be the victim.
			own, _ := fleet.AgentReply(m.Reply, r.Caller, fleet.MachineToken(evil))
			f = nats.NewMsg(own)
			f.Header.Set(fleet.HeaderMachine, v)
			f.Header.Set(fleet.HeaderFunction, "patches")
			f.Data = []byte(`{"pending":0}`)
			_ = nc.PublishMsg(f)
		}
	}
	if _, err := nc.Subscribe(fleet.BroadcastCallsWildcard, forge); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	stacktest.WaitFor(t, "evil online", 5*time.Second, func() bool { return stacktest.Online(svc, evil) })

	res := adminCall(t, svc, "patches")
	got := map[string]string{}
	for _, r := range res.Replied {
		got[r.Machine] = string(r.Result)
	}
	for i, v := range victims {
		var p struct{ Pending int }
		if err := json.Unmarshal([]byte(got[v]), &p); err != nil || p.Pending != 10+i {
			t.Errorf("%s: got %q, want its real answer pending=%d", v, got[v], 10+i)
		}
	}
	select {
	case err := <-errs:
		t.Logf("forgery refused by the broker: %v", err)
	case <-time.After(2 * time.Second):
		t.Fatal("no permissions violation for replies in other machines' names")
	}
	// The audit holds the real outcomes: every victim ok, the forger's
	// own subject only for the forger.
	r := callRecord(t, records, "patches")
	seen := map[string]int{}
	for _, o := range r.Outcomes {
		seen[o.Machine]++
	}
	for _, v := range victims {
		if seen[v] != 1 {
			t.Errorf("audit: %s has %d outcomes, want 1", v, seen[v])
		}
	}
}

// TestThreatAimedAnswersDoNotStandInForMachines: a compromised agent learns
// an admin's call id from the broadcast it receives, and a viewer aims
// answers it can trigger — the agents' and the control service's micro
// discovery, the presence snapshot — at each machine's reply subject of
// that call, before the machines answer. Nothing of that counts: the
// workbench and the audit report every machine's real answer.
func TestThreatAimedAnswersDoNotStandInForMachines(t *testing.T) {
	svc, records := startControlWithCallHook(t)
	viewer := operatorConn(t, svc.ClientURL(), newOperator(t, svc, "victor", fleet.RoleViewer))
	var victims []string
	for i := range 3 {
		id := fmt.Sprintf("10.0.2.%d_db%d", i+1, i+1)
		startAgent(t, svc, id, true, stacktest.Slow("patches", 300*time.Millisecond, map[string]int{"pending": 7}))
		victims = append(victims, id)
	}
	for _, id := range victims {
		stacktest.WaitFor(t, id+" online", 5*time.Second, func() bool { return stacktest.Online(svc, id) })
	}
	spy, _ := compromisedAgent(t, svc, "10.6.6.7_spy", []byte(`{}`))
	aimed := make(chan int, 1)
	if _, err := spy.Subscribe(fleet.AllSubject("patches", "*"), func(m *nats.Msg) {
		r, err := fleet.ParseCallReply(m.Reply)
		if err != nil {
			return
		}
		// The spy answers for itself, so the call ends at once.
		own, _ := fleet.AgentReply(m.Reply, r.Caller, fleet.MachineToken("10.6.6.7_spy"))
		a := nats.NewMsg(own)
		a.Header.Set(fleet.HeaderFunction, "patches")
		a.Data = []byte(`{"pending":0}`)
		_ = spy.PublishMsg(a)
		n := 0
		for _, v := range victims {
			subj := fleet.CallReply(r.Caller, fleet.MachineToken(v), r.Call, 0) + ".x"
			for _, ask := range []string{"$SRV.PING.cc-agent", "$SRV.INFO.cc-agent", "$SRV.PING.cc-control", fleet.PresenceSnapshotSubject} {
				if viewer.PublishRequest(ask, subj, nil) == nil {
					n++
				}
			}
		}
		_ = viewer.Flush()
		aimed <- n
	}); err != nil {
		t.Fatal(err)
	}
	_ = spy.Flush()
	res := adminCall(t, svc, "patches")
	select {
	case n := <-aimed:
		t.Logf("%d answers aimed at the machines' reply subjects", n)
	case <-time.After(5 * time.Second):
		t.Fatal("the compromised agent never saw the call")
	}
	got := map[string]string{}
	for _, r := range res.Replied {
		got[r.Machine] = string(r.Result)
	}
	for _, v := range victims {
		if got[v] != `{"pending":7}` {
			t.Errorf("%s: got %q, want its real answer", v, got[v])
		}
	}
	for _, o := range callRecord(t, records, "patches").Outcomes {
		if slices.Contains(victims, o.Machine) && (o.Status != fleet.OutcomeOK || o.DurationMS < 250) {
			t.Errorf("audit: %s %s after %d ms, want its real answer after ~300 ms", o.Machine, o.Status, o.DurationMS)
		}
	}
}

// adminCall calls fn on every machine as the first admin, through the SDK.
func adminCall(t *testing.T, svc *controlsvc.Service, fn string) *bench.Results {
	t.Helper()
	c, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Call(t.Context(), fn, nil, bench.CallOptions{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// callRecord waits for the call watcher's record of a call of fn.
func callRecord(t *testing.T, records chan fleet.AuditRecord, fn string) fleet.AuditRecord {
	t.Helper()
	for {
		select {
		case r := <-records:
			if r.Function == fn {
				return r
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no audit record of a call of %s", fn)
		}
	}
}
