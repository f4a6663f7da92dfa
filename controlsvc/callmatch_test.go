package controlsvc

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// fakeMachines is presence as call watching sees it: a set of ONLINE ids.
type fakeMachines map[string]bool

func (f fakeMachines) online(id string) bool { return f[id] }
func (f fakeMachines) count() int            { return len(f) }
func (f fakeMachines) onlineIDs() []string {
	ids := make([]string, 0, len(f))
	for id := range f {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// matchFixture is a callMatcher alone, fed synthetic messages, with a
// clock the test moves and the records it emitted.
type matchFixture struct {
	t     *testing.T
	m     *callMatcher
	clock time.Time
	recs  []fleet.AuditRecord
}

const matchWait = 10 * time.Second

func newMatchFixture(t *testing.T, online ...string) *matchFixture {
	machines := fakeMachines{}
	for _, id := range online {
		machines[id] = true
	}
	f := &matchFixture{t: t, clock: time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)}
	names := map[string]string{wAlice: "alice"}
	f.m = newCallMatcher(machines, func(k string) (string, bool) { n, ok := names[k]; return n, ok }, matchWait,
		func() time.Time { return f.clock }, func(r fleet.AuditRecord) { f.recs = append(f.recs, r) })
	return f
}

func (f *matchFixture) request(subject, reply, callID, args string) {
	f.t.Helper()
	m := &nats.Msg{Subject: subject, Reply: reply, Data: []byte(args), Header: nats.Header{}}
	if callID != "" {
		m.Header.Set(fleet.HeaderCallID, callID)
	}
	req, ok := parseCallRequest(m)
	if !ok {
		f.t.Fatalf("%s (reply %s) is not a call", subject, reply)
	}
	f.m.request(req)
}

func (f *matchFixture) answer(subject, fn string, code int, desc string) {
	m := &nats.Msg{Subject: subject, Data: []byte(`{}`), Header: nats.Header{}}
	m.Header.Set(fleet.HeaderFunction, fn)
	if code != 0 {
		m.Header.Set(fleet.HeaderErrorCode, strconv.Itoa(code))
		m.Header.Set(fleet.HeaderError, desc)
	}
	f.m.reply(m)
}

func (f *matchFixture) advance(d time.Duration) {
	f.clock = f.clock.Add(d)
	f.m.flushDue(f.clock)
}

func (f *matchFixture) one() fleet.AuditRecord {
	f.t.Helper()
	if len(f.recs) != 1 {
		f.t.Fatalf("got %d records, want 1: %+v", len(f.recs), f.recs)
	}
	return f.recs[0]
}

// Re-sent copies of a call (one call id, a reply subject each) are one
// call with one target: a re-send does not push its end out, the first
// answer stands and a later one to another copy is a duplicate.
func TestCallMatcherResentCopies(t *testing.T) {
	f := newMatchFixture(t, "web01")
	subj := fleet.FnSubject("web01", fleet.FnSwList, wAlice)
	f.request(subj, fleet.CallReply(wAlice, "web01", "c1", 0), "c1", `{}`)
	f.advance(4 * time.Second)
	f.request(subj, fleet.CallReply(wAlice, "web01", "c1", 1), "c1", `{}`)
	f.advance(4 * time.Second)
	f.request(subj, fleet.CallReply(wAlice, "web01", "c1", 2), "c1", `{}`)
	f.advance(time.Second)
	f.answer(fleet.CallReply(wAlice, "web01", "c1", 1), fleet.FnSwList, fleet.CodeInternal, "failed")
	f.answer(fleet.CallReply(wAlice, "web01", "c1", 2), fleet.FnSwList, 0, "")
	f.advance(time.Second) // past the linger of a complete call
	r := f.one()
	if r.Targets != 1 || r.Errors != 1 || r.OK != 0 || r.Operator != "alice" || r.OperatorKey != wAlice || r.Broadcast {
		t.Fatalf("got %+v, want one target, the first answer (an error), operator alice", r)
	}
	if o := r.Outcomes[0]; o.Machine != "web01" || o.Code != fleet.CodeInternal || o.DurationMS != 9000 {
		t.Fatalf("outcome %+v, want web01's 500 after 9 s", o)
	}

	// A re-send does not extend the wait: a call nobody answers is
	// recorded wait after its first copy, not after its last.
	f = newMatchFixture(t, "web01")
	f.request(subj, fleet.CallReply(wAlice, "web01", "c2", 0), "c2", `{}`)
	f.advance(matchWait - time.Second)
	f.request(subj, fleet.CallReply(wAlice, "web01", "c2", 1), "c2", `{}`)
	f.advance(time.Second)
	if r := f.one(); r.NoResp != 1 || r.Outcomes[0].Code != 0 {
		t.Fatalf("got %+v, want web01 without an answer", r)
	}
}

// Requests without a call id (hand-made, nats.go's request mux) are a
// call each, even under one call token.
func TestCallMatcherCopiesWithoutCallID(t *testing.T) {
	f := newMatchFixture(t, "web01")
	subj := fleet.FnSubject("web01", fleet.FnCurrentLoad, wBob)
	f.request(subj, fleet.CallReply(wBob, "web01", "mux", 0), "", `{}`)
	f.request(subj, fleet.CallReply(wBob, "web01", "mux", 1), "", `{}`)
	f.answer(fleet.CallReply(wBob, "web01", "mux", 1), fleet.FnCurrentLoad, 0, "")
	f.advance(matchWait)
	if len(f.recs) != 2 {
		t.Fatalf("got %d records, want 2: %+v", len(f.recs), f.recs)
	}
	ok := 0
	for _, r := range f.recs {
		ok += r.OK
	}
	if ok != 1 {
		t.Fatalf("got %d ok answers in all, want 1 (copy 1's): %+v", ok, f.recs)
	}
}

// The same id-less request sent twice on one reply subject runs twice on
// the agent (it has no id to tell a repeat by), so it is two records,
// each with its own answer; a third answer is a duplicate.
func TestCallMatcherRepeatsWithoutCallID(t *testing.T) {
	f := newMatchFixture(t, "web01")
	subj := fleet.FnSubject("web01", "bump", wBob)
	reply := fleet.CallReply(wBob, "web01", "same", 0)
	f.request(subj, reply, "", `{"n":1}`)
	f.request(subj, reply, "", `{"n":1}`)
	f.answer(reply, "bump", 0, "")
	f.answer(reply, "bump", 0, "")
	f.answer(reply, "bump", 0, "")
	f.advance(time.Second)
	if len(f.recs) != 2 {
		t.Fatalf("got %d records, want 2 (the agent ran it twice): %+v", len(f.recs), f.recs)
	}
	for _, r := range f.recs {
		if r.Targets != 1 || r.OK != 1 || string(r.Args) != `{"n":1}` {
			t.Fatalf("record %+v, want one target answered ok with the call's arguments", r)
		}
	}
}

// A broadcast expects every ONLINE machine; one that answers unexpected
// (it came online meanwhile) is added; those silent are no-response.
func TestCallMatcherBroadcast(t *testing.T) {
	f := newMatchFixture(t, "web01", "web02", "web03")
	f.request(fleet.AllSubject(fleet.FnMachineInfo, wAlice), fleet.CallReply(wAlice, fleet.ReplyToAll, "b1", 0), "b1", ``)
	f.answer(fleet.CallReply(wAlice, "web01", "b1", 0), fleet.FnMachineInfo, 0, "")
	f.answer(fleet.CallReply(wAlice, "web02", "b1", 0), fleet.FnMachineInfo, fleet.CodeUnavailable, "no source")
	f.answer(fleet.CallReply(wAlice, "web09", "b1", 0), fleet.FnMachineInfo, 0, "")
	// A status for the whole call (the broker's, on @all) names no machine.
	f.m.reply(&nats.Msg{Subject: fleet.CallReply(wAlice, fleet.ReplyToAll, "b1", 0), Header: nats.Header{fleet.HeaderStatus: {fleet.StatusNoResponders}}})
	f.advance(matchWait - time.Millisecond)
	if len(f.recs) != 0 {
		t.Fatalf("recorded before the wait ended: %+v", f.recs)
	}
	f.advance(time.Millisecond)
	r := f.one()
	want := map[string]string{"web01": fleet.OutcomeOK, "web02": fleet.OutcomeError, "web03": fleet.OutcomeNoResponse, "web09": fleet.OutcomeOK}
	if got := outcomes(r); len(got) != len(want) || !r.Broadcast || r.Targets != 4 || r.OK != 2 || r.Errors != 1 || r.NoResp != 1 {
		t.Fatalf("got %+v (%v), want %v", r, got, want)
	}
	for m, st := range want {
		if outcomes(r)[m] != st {
			t.Errorf("%s: got %q, want %q", m, outcomes(r)[m], st)
		}
	}
	if !sort.SliceIsSorted(r.Outcomes, func(i, j int) bool { return r.Outcomes[i].Machine < r.Outcomes[j].Machine }) {
		t.Errorf("outcomes not sorted by machine: %+v", r.Outcomes)
	}

	// With nobody ONLINE a broadcast expects no one: it is recorded
	// after the short linger, not the full wait.
	f = newMatchFixture(t)
	f.request(fleet.AllSubject(fleet.FnMachineInfo, wAlice), fleet.CallReply(wAlice, fleet.ReplyToAll, "b2", 0), "b2", ``)
	f.advance(callLinger)
	if r := f.one(); r.Targets != 0 || !r.Broadcast {
		t.Fatalf("got %+v, want a broadcast with no targets", r)
	}
}

// Arguments past fleet.AuditMaxCallArgs are cut with their size and
// hash kept; calls that differ only past the cut are still two calls;
// an agent's long error is cut to 200 characters.
func TestCallMatcherTruncation(t *testing.T) {
	f := newMatchFixture(t, "web01")
	long := `{"name":"` + strings.Repeat("a", fleet.AuditMaxCallArgs) + `"}`
	other := `{"name":"` + strings.Repeat("a", fleet.AuditMaxCallArgs) + `b"}`
	subj := fleet.FnSubject("web01", fleet.FnSwList, wAlice)
	f.request(subj, fleet.CallReply(wAlice, "web01", "t1", 0), "t1", long)
	f.request(subj, fleet.CallReply(wAlice, "web01", "t1", 0), "t1", other)
	f.answer(fleet.CallReply(wAlice, "web01", "t1", 0), fleet.FnSwList, fleet.CodeInternal, strings.Repeat("x", 500))
	f.advance(matchWait)
	if len(f.recs) != 2 {
		t.Fatalf("got %d records, want 2 (the arguments differ past the cut): %+v", len(f.recs), f.recs)
	}
	sums := map[string]bool{}
	answered := 0
	for _, r := range f.recs {
		if r.Cut == nil || (r.Cut.Size != len(long) && r.Cut.Size != len(other)) {
			t.Fatalf("record %+v: want a cut with the whole size", r)
		}
		if len(r.Args) > fleet.AuditMaxCallArgs+64 {
			t.Errorf("arguments kept: %d bytes, want about %d", len(r.Args), fleet.AuditMaxCallArgs)
		}
		sums[r.Cut.SHA256] = true
		if o := r.Outcomes[0]; o.Status == fleet.OutcomeError {
			answered++
			if o.Error != strings.Repeat("x", 200)+"…" {
				t.Errorf("error kept as %d bytes %.20q…, want 200 x and …", len(o.Error), o.Error)
			}
		}
	}
	for _, body := range []string{long, other} {
		sum := sha256.Sum256([]byte(body))
		if !sums[hex.EncodeToString(sum[:])] {
			t.Errorf("no record with the SHA-256 of the %d-byte arguments", len(body))
		}
	}
	if answered != 1 {
		t.Errorf("%d records hold the one answer, want 1", answered)
	}
}

// A reply that comes after its call was recorded (after the wait, or
// after the linger of a complete call) makes no second record.
func TestCallMatcherLateReplies(t *testing.T) {
	f := newMatchFixture(t, "web01", "web02")
	f.request(fleet.AllSubject(fleet.FnCurrentLoad, wAlice), fleet.CallReply(wAlice, fleet.ReplyToAll, "l1", 0), "l1", ``)
	f.answer(fleet.CallReply(wAlice, "web01", "l1", 0), fleet.FnCurrentLoad, 0, "")
	f.advance(matchWait)
	f.answer(fleet.CallReply(wAlice, "web02", "l1", 0), fleet.FnCurrentLoad, 0, "")
	f.advance(matchWait)
	if r := f.one(); r.OK != 1 || r.NoResp != 1 {
		t.Fatalf("got %+v, want web02 no-response: its answer came after the wait", r)
	}

	f = newMatchFixture(t, "web01")
	subj := fleet.FnSubject("web01", fleet.FnSwList, wAlice)
	f.request(subj, fleet.CallReply(wAlice, "web01", "l2", 0), "l2", `{}`)
	f.answer(fleet.CallReply(wAlice, "web01", "l2", 0), fleet.FnSwList, 0, "")
	f.advance(callLinger)
	f.answer(fleet.CallReply(wAlice, "web01", "l2", 0), fleet.FnSwList, fleet.CodeInternal, "again")
	f.advance(matchWait)
	if r := f.one(); r.OK != 1 || r.Errors != 0 {
		t.Fatalf("got %+v, want the first answer only", r)
	}
}

// A reply from a machine the direct call did not target neither counts
// nor becomes a target; one naming another function is not this call's.
func TestCallMatcherReplyFromUntargetedMachine(t *testing.T) {
	f := newMatchFixture(t, "web01", "web02")
	f.request(fleet.FnSubject("web01", fleet.FnSwList, wAlice), fleet.CallReply(wAlice, "web01", "u1", 0), "u1", `{}`)
	f.answer(fleet.CallReply(wAlice, "web02", "u1", 0), fleet.FnSwList, 0, "")
	f.answer(fleet.CallReply(wAlice, "web01", "u1", 0), fleet.FnMachineInfo, 0, "")
	f.advance(matchWait)
	r := f.one()
	if got := outcomes(r); len(got) != 1 || got["web01"] != fleet.OutcomeNoResponse {
		t.Fatalf("got %v, want web01 alone, without an answer", got)
	}
}

// A direct call to a machine that is not ONLINE is settled "offline" at
// once (the responder answers the caller); an answer to a later copy
// still wins, a "no responders" status does not undo an answer.
func TestCallMatcherOffline(t *testing.T) {
	f := newMatchFixture(t)
	subj := fleet.FnSubject("db01", fleet.FnSwList, wBob)
	f.request(subj, fleet.CallReply(wBob, "db01", "o1", 0), "o1", `{}`)
	f.advance(callLinger)
	r := f.one()
	if o := r.Outcomes[0]; o.Status != fleet.OutcomeNoResponse || o.Code != fleet.CodeUnavailable {
		t.Fatalf("outcome %+v, want no-response 503 (offline)", o)
	}

	f = newMatchFixture(t)
	f.request(subj, fleet.CallReply(wBob, "db01", "o2", 0), "o2", `{}`)
	f.request(subj, fleet.CallReply(wBob, "db01", "o2", 1), "o2", `{}`)
	f.answer(fleet.CallReply(wBob, "db01", "o2", 1), fleet.FnSwList, 0, "")
	f.m.reply(&nats.Msg{Subject: fleet.CallReply(wBob, "db01", "o2", 0), Header: nats.Header{fleet.HeaderStatus: {fleet.StatusNoResponders}}})
	f.advance(matchWait)
	if r := f.one(); r.OK != 1 || r.Outcomes[0].Code != 0 {
		t.Fatalf("got %+v, want db01's answer", r)
	}
}

// flushOldest records the oldest open call of one caller, or of anyone.
func TestCallMatcherFlushOldestPerCaller(t *testing.T) {
	f := newMatchFixture(t, "web01")
	call := func(caller, id string) {
		f.request(fleet.FnSubject("web01", fleet.FnSwList, caller), fleet.CallReply(caller, "web01", id, 0), id, `{}`)
		f.clock = f.clock.Add(time.Second)
	}
	call(wBob, "b0")
	call(wAlice, "a0")
	call(wAlice, "a1")
	f.m.flushOldest(wAlice)
	if r := f.one(); r.OperatorKey != wAlice || !strings.Contains(r.Subject, wAlice) || r.Time != time.Date(2031, 1, 2, 3, 4, 6, 0, time.UTC) {
		t.Fatalf("got %+v, want alice's oldest call (a0)", r)
	}
	f.m.flushOldest("")
	if len(f.recs) != 2 || f.recs[1].OperatorKey != wBob {
		t.Fatalf("got %+v, want bob's call, the oldest of all, next", f.recs)
	}
	f.m.flushOldest(wBob) // none left: nothing happens
	if len(f.recs) != 2 || len(f.m.calls) != 1 || f.m.open[wAlice] != 1 || f.m.open[wBob] != 0 {
		t.Fatalf("records %d, open calls %d, per caller %v; want 2, 1 and alice's one", len(f.recs), len(f.m.calls), f.m.open)
	}
}

// A call whose reply subject no agent answers on is not recorded.
func TestCallMatcherIgnoresRefusedCalls(t *testing.T) {
	f := newMatchFixture(t, "web01")
	f.request(fleet.FnSubject("web01", fleet.FnSwList, wBob), fleet.CallReply(wAlice, "web01", "r1", 0), "r1", `{}`)
	f.request(fleet.FnSubject("web01", fleet.FnSwList, wBob), fleet.CallReply(wBob, "web02", "r2", 0), "r2", `{}`)
	f.advance(matchWait)
	if len(f.recs) != 0 || len(f.m.calls) != 0 {
		t.Fatalf("recorded calls no agent runs: %+v", f.recs)
	}
}

// A broadcast whose reply subject names one machine is answered by that
// machine alone (fleet.AgentReply): it is recorded as a broadcast with
// that one target, and another machine's answer does not join it.
func TestCallMatcherBroadcastAimedAtOneMachine(t *testing.T) {
	f := newMatchFixture(t, "web01", "web02")
	f.request(fleet.AllSubject(fleet.FnSwList, wAlice), fleet.CallReply(wAlice, "web01", "a1", 0), "a1", `{}`)
	f.answer(fleet.CallReply(wAlice, "web02", "a1", 0), fleet.FnSwList, 0, "")
	f.answer(fleet.CallReply(wAlice, "web01", "a1", 0), fleet.FnSwList, 0, "")
	f.advance(callLinger)
	r := f.one()
	if got := outcomes(r); !r.Broadcast || len(got) != 1 || got["web01"] != fleet.OutcomeOK {
		t.Fatalf("got %+v (%v), want a broadcast with web01 alone, ok", r, got)
	}
}

// answerWithID is answer as an agent answers a call with an id: echoing it.
func (f *matchFixture) answerWithID(subject, fn, callID string) {
	m := &nats.Msg{Subject: subject, Data: []byte(`{}`), Header: nats.Header{}}
	m.Header.Set(fleet.HeaderFunction, fn)
	m.Header.Set(fleet.HeaderCallID, callID)
	f.m.reply(m)
}

// An id-less broadcast sent twice on one reply subject runs twice on
// every agent, and so does an id-less direct call followed by an id-less
// broadcast under the same token: each is a record of its own, each
// answer counted once.
func TestCallMatcherIdlessBroadcastRepeats(t *testing.T) {
	f := newMatchFixture(t, "web01", "web02")
	subj := fleet.AllSubject("bump", wBob)
	reply := fleet.CallReply(wBob, fleet.ReplyToAll, "t", 0)
	f.request(subj, reply, "", `{}`)
	f.request(subj, reply, "", `{}`)
	for range 2 {
		f.answer(fleet.CallReply(wBob, "web01", "t", 0), "bump", 0, "")
		f.answer(fleet.CallReply(wBob, "web02", "t", 0), "bump", 0, "")
	}
	f.advance(time.Second)
	if len(f.recs) != 2 || f.recs[0].OK != 2 || f.recs[1].OK != 2 {
		t.Fatalf("got %+v, want two broadcast records of 2 ok each (4 runs)", f.recs)
	}

	f = newMatchFixture(t, "web01")
	f.request(fleet.FnSubject("web01", "bump", wBob), fleet.CallReply(wBob, "web01", "t", 0), "", `{}`)
	f.request(subj, reply, "", `{}`)
	f.answer(fleet.CallReply(wBob, "web01", "t", 0), "bump", 0, "")
	f.answer(fleet.CallReply(wBob, "web01", "t", 0), "bump", 0, "")
	f.advance(time.Second)
	ok := 0
	for _, r := range f.recs {
		ok += r.OK
	}
	if len(f.recs) != 2 || ok != 2 {
		t.Fatalf("got %+v, want the direct call and the broadcast recorded apart, 2 runs", f.recs)
	}
}

// A copy with an id and a copy without one on the same reply subject are
// two calls; each answer goes to its own (the agent echoes the id).
func TestCallMatcherEchoedIDPicksTheCall(t *testing.T) {
	f := newMatchFixture(t, "web01")
	subj := fleet.FnSubject("web01", "bump", wBob)
	reply := fleet.CallReply(wBob, "web01", "X", 1)
	f.request(subj, reply, "X", `{}`)
	f.request(subj, reply, "", `{}`)
	f.answerWithID(reply, "bump", "X")
	f.answer(reply, "bump", fleet.CodeInternal, "failed")
	f.advance(time.Second)
	if len(f.recs) != 2 {
		t.Fatalf("got %d records, want 2: %+v", len(f.recs), f.recs)
	}
	for _, r := range f.recs {
		if r.Targets != 1 || r.OK+r.Errors != 1 {
			t.Fatalf("got %+v, want each call answered once", f.recs)
		}
	}
}

// A re-sent broadcast copy does not push the call's end out: a call with
// a silent machine is recorded wait after its first copy.
func TestCallMatcherBroadcastResendKeepsTheDeadline(t *testing.T) {
	f := newMatchFixture(t, "web01")
	subj := fleet.AllSubject(fleet.FnMachineInfo, wAlice)
	for i := range 5 {
		f.request(subj, fleet.CallReply(wAlice, fleet.ReplyToAll, "b", i), "b", ``)
		f.advance(matchWait / 4)
	}
	if len(f.recs) != 1 || f.recs[0].NoResp != 1 {
		t.Fatalf("after %s of re-sends: %+v, want the call recorded with web01 silent", matchWait*5/4, f.recs)
	}
}

// Two calls under one id with other arguments (the first copy dropped by
// the agent unanswered, the second run): the answer on the second copy
// is credited to the second call's arguments, not the first's.
func TestCallMatcherAnswerCreditsTheCopySent(t *testing.T) {
	f := newMatchFixture(t, "web01")
	subj := fleet.FnSubject("web01", "run", wBob)
	f.request(subj, fleet.CallReply(wBob, "web01", "X", 0), "X", `{"cmd":"harmless"}`)
	f.request(subj, fleet.CallReply(wBob, "web01", "X", 1), "X", `{"cmd":"harmful"}`)
	f.answerWithID(fleet.CallReply(wBob, "web01", "X", 1), "run", "X")
	f.advance(matchWait)
	if len(f.recs) != 2 {
		t.Fatalf("got %d records, want 2: %+v", len(f.recs), f.recs)
	}
	for _, r := range f.recs {
		ran := r.OK == 1
		if harmful := string(r.Args) == `{"cmd":"harmful"}`; ran != harmful {
			t.Fatalf("record %s: ok %d; want only the harmful arguments' call answered", r.Args, r.OK)
		}
	}
}

// answerRan is an agent's answer naming the call id and the arguments it
// ran (fleet.HeaderArgs), with code 0 for a result.
func (f *matchFixture) answerRan(subject, fn, callID, args string, code int) {
	m := &nats.Msg{Subject: subject, Data: []byte(`{}`), Header: nats.Header{}}
	m.Header.Set(fleet.HeaderFunction, fn)
	if callID != "" {
		m.Header.Set(fleet.HeaderCallID, callID)
	}
	m.Header.Set(fleet.HeaderArgs, fleet.ArgsDigest([]byte(args)))
	if code != 0 {
		m.Header.Set(fleet.HeaderErrorCode, strconv.Itoa(code))
		m.Header.Set(fleet.HeaderError, "failed")
	}
	f.m.reply(m)
}

// okByArgs is each record's ok count by its arguments.
func (f *matchFixture) okByArgs() map[string]int {
	out := map[string]int{}
	for _, r := range f.recs {
		out[string(r.Args)] += r.OK
	}
	return out
}

// Answers are credited by the arguments the agent names, not by copy
// tokens or order: two calls under one id on one reply subject (the
// first dropped by the agent, the second run), and two id-less calls on
// one reply subject answered in reverse order.
func TestCallMatcherCreditsTheArgumentsThatRan(t *testing.T) {
	f := newMatchFixture(t, "web01")
	subj := fleet.FnSubject("web01", "run", wBob)
	reply := fleet.CallReply(wBob, "web01", "X", 0)
	f.request(subj, reply, "X", `{"cmd":"harmless"}`)
	f.request(subj, reply, "X", `{"cmd":"harmful"}`)
	f.answerRan(reply, "run", "X", `{"cmd":"harmful"}`, 0)
	f.advance(matchWait)
	if got := f.okByArgs(); got[`{"cmd":"harmful"}`] != 1 || got[`{"cmd":"harmless"}`] != 0 {
		t.Fatalf("one id, one reply subject: ok by arguments %v, want only the harmful call's", got)
	}

	f = newMatchFixture(t, "web01")
	f.request(subj, reply, "", `{"cmd":"slow"}`)
	f.request(subj, reply, "", `{"cmd":"fast"}`)
	f.answerRan(reply, "run", "", `{"cmd":"fast"}`, 0)
	f.answerRan(reply, "run", "", `{"cmd":"slow"}`, fleet.CodeInternal)
	f.advance(time.Second)
	for _, r := range f.recs {
		if fast := string(r.Args) == `{"cmd":"fast"}`; (r.OK == 1) != fast || (r.Errors == 1) == fast {
			t.Fatalf("id-less, answered out of order: %s got ok %d errors %d", r.Args, r.OK, r.Errors)
		}
	}
}

// An id-less request and one with an id on a reply subject without a
// copy token are two calls, not one.
func TestCallMatcherIdlessAndIDApart(t *testing.T) {
	f := newMatchFixture(t, "web01")
	subj := fleet.FnSubject("web01", "run", wBob)
	reply := fleet.InboxRoot + "." + wBob + ".web01.Z"
	f.request(subj, reply, "", `{}`)
	f.request(subj, reply, "Z", `{}`)
	f.answerRan(reply, "run", "", `{}`, 0)
	f.answerRan(reply, "run", "Z", `{}`, 0)
	f.advance(time.Second)
	if len(f.recs) != 2 || f.recs[0].OK != 1 || f.recs[1].OK != 1 {
		t.Fatalf("got %+v, want two calls, each answered", f.recs)
	}
}

// A call recorded early (its operator's flood) shows its open targets as
// untracked, not as machines that did not answer.
func TestCallMatcherEvictedIsUntracked(t *testing.T) {
	f := newMatchFixture(t, "web01")
	f.request(fleet.FnSubject("web01", "run", wAlice), fleet.CallReply(wAlice, "web01", "first", 0), "first", `{}`)
	for i := range maxWatchedPerCaller {
		c := "f" + strconv.Itoa(i)
		f.request(fleet.FnSubject("web01", "run", wAlice), fleet.CallReply(wAlice, "web01", c, 0), c, `{}`)
	}
	r := f.one()
	if r.NoResp != 0 || r.Outcomes[0].Status != fleet.OutcomeUntracked || !strings.Contains(r.Outcomes[0].Error, "not known") {
		t.Fatalf("evicted call: %+v, want its target untracked", r)
	}
}

// The targets one operator's open calls hold are bounded: broadcasts to
// a large fleet record that operator's oldest early, not another's.
func TestCallMatcherHeldTargetsBounded(t *testing.T) {
	defer func(all, per int) { maxHeldTargets, maxHeldPerCaller = all, per }(maxHeldTargets, maxHeldPerCaller)
	maxHeldTargets, maxHeldPerCaller = 400, 100
	var online []string
	for i := range 30 {
		online = append(online, "m"+strconv.Itoa(i))
	}
	f := newMatchFixture(t, online...)
	f.request(fleet.AllSubject("run", wBob), fleet.CallReply(wBob, fleet.ReplyToAll, "bob", 0), "bob", `{}`)
	for i := range 10 {
		c := "b" + strconv.Itoa(i)
		f.request(fleet.AllSubject("run", wAlice), fleet.CallReply(wAlice, fleet.ReplyToAll, c, 0), c, `{}`)
		if f.m.held[wAlice] > maxHeldPerCaller+len(online) {
			t.Fatalf("alice's calls hold %d targets, bound %d", f.m.held[wAlice], maxHeldPerCaller)
		}
	}
	for _, r := range f.recs {
		if r.OperatorKey == wBob {
			t.Fatalf("bob's call was recorded early: %+v", r)
		}
	}
	if len(f.recs) == 0 {
		t.Fatal("no call of alice's was recorded early")
	}
	f.m.flushDue(time.Time{})
	if f.m.heldAll != 0 || len(f.m.held) != 0 {
		t.Fatalf("after every call is recorded: held %d, by caller %v", f.m.heldAll, f.m.held)
	}
}

// A machine's discovery inbox (fleet.MachineDiscoveryInbox, @srv where a
// call token goes) is no call's reply subject: a call asking for answers
// there is not one an agent runs, so it is not recorded, and a discovery
// answer there, even one carrying a function header, is credited to no
// call and makes no audit record.
func TestCallMatcherIgnoresDiscoveryInboxes(t *testing.T) {
	f := newMatchFixture(t, "web01")
	inbox := fleet.MachineDiscoveryInbox(wAlice, "web01") + ".n1"
	f.request(fleet.FnSubject("web01", fleet.FnSwList, wAlice), inbox, "", `{}`)
	f.request(fleet.AllSubject(fleet.FnSwList, wAlice), inbox, "", `{}`)
	f.request(fleet.FnSubject("web01", fleet.FnSwList, wAlice), fleet.CallReply(wAlice, "web01", "c1", 0), "c1", `{}`)
	f.answer(inbox, fleet.FnSwList, 0, "")
	f.answer(fleet.MachineDiscoveryInbox(wAlice, "web01")+".c1.0", fleet.FnSwList, 0, "")
	f.advance(matchWait)
	r := f.one()
	if got := outcomes(r); r.Subject != fleet.FnSubject("web01", fleet.FnSwList, wAlice) || got["web01"] != fleet.OutcomeNoResponse {
		t.Fatalf("got %+v (%v): want the real call c1 alone, unanswered", r, got)
	}
}
