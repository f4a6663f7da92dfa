package controlsvc

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// sessionWatchFixture is newWatchFixture with sessions ONLINE besides
// the machines.
func sessionWatchFixture(t *testing.T, machines []string, sessions ...string) *watchFixture {
	t.Helper()
	f := newWatchFixture(t, machines...)
	sp := newSessionPresence(func() time.Time { return f.clock }, nil)
	for i, id := range sessions {
		sp.connected(connKey{"S", uint64(100 + i)}, sessionConnInfo{id: id, tags: []string{"app:demo"}})
	}
	f.w.responder.sessions = sp
	f.w.matcher.sessions = sp
	return f
}

// sessionAnswer is session id's answer on reply: it echoes the call id
// and the arguments' digest like an agent, with no function header
// (a session writes none it need not), code != 0 an error.
func (f *watchFixture) sessionAnswer(reply, callID, args string, code int) {
	m := &nats.Msg{Subject: reply, Data: []byte(`{"ms":3}`), Header: nats.Header{}}
	m.Header.Set(fleet.HeaderCallID, callID)
	m.Header.Set(fleet.HeaderArgs, fleet.ArgsDigest([]byte(args)))
	if code != 0 {
		m.Header.Set(fleet.HeaderErrorCode, strconv.Itoa(code))
		m.Header.Set(fleet.HeaderError, "failed")
	}
	f.w.handle(m)
}

// A call to a session that is not ONLINE is answered "no responders" at
// once, each copy, into the caller's own inbox only; one to an ONLINE
// session is not; a reply subject the session will not answer on gets a
// 400 naming the right one.
func TestSessionCallNoResponders(t *testing.T) {
	tests := []struct {
		name       string
		subject    string
		reply      string
		wantStatus string
		wantDesc   string
	}{
		{"online", fleet.SessionFnSubject(sidA, "latencyCheck", wBob), fleet.CallReply(wBob, sidA, "c", 0), "", ""},
		{"offline", fleet.SessionFnSubject(sidB, "latencyCheck", wBob), fleet.CallReply(wBob, sidB, "c", 0), "503", ""},
		{"offline, re-sent copy", fleet.SessionFnSubject(sidB, "latencyCheck", wBob), fleet.CallReply(wBob, sidB, "c", 4), "503", ""},
		{"offline, another operator's inbox", fleet.SessionFnSubject(sidB, "latencyCheck", wBob), fleet.CallReply(wAlice, sidB, "c", 0), "", ""},
		{"reply on @all", fleet.SessionFnSubject(sidA, "latencyCheck", wBob), fleet.CallReply(wBob, fleet.ReplyToAll, "c", 0), "400", "no session answers on the reply subject"},
		{"reply naming a machine", fleet.SessionFnSubject(sidA, "latencyCheck", wBob), fleet.CallReply(wBob, "web01", "c", 0), "400", fleet.OperatorInbox(wBob) + "." + sidA},
		{"reply naming another session", fleet.SessionFnSubject(sidB, "latencyCheck", wBob), fleet.CallReply(wBob, sidA, "c", 0), "400", "use " + fleet.OperatorInbox(wBob) + "." + sidB},
		{"reply naming another's inbox and session", fleet.SessionFnSubject(sidB, "latencyCheck", wBob), fleet.CallReply(wAlice, sidA, "c", 0), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sessionWatchFixture(t, []string{"web01"}, sidA)
			f.request(tt.subject, tt.reply, "c", `{}`)
			if tt.wantStatus == "" {
				if len(f.sent) != 0 {
					t.Fatalf("answered %+v, want nothing", f.sent[0])
				}
				return
			}
			if len(f.sent) != 1 || f.sent[0].Subject != tt.reply {
				t.Fatalf("sent %+v, want one answer on %s", f.sent, tt.reply)
			}
			h := f.sent[0].Header
			switch tt.wantStatus {
			case "503":
				if h.Get(fleet.HeaderStatus) != fleet.StatusNoResponders {
					t.Fatalf("headers %v, want no responders", h)
				}
			case "400":
				if h.Get(fleet.HeaderErrorCode) != "400" || !strings.Contains(h.Get(fleet.HeaderError), tt.wantDesc) {
					t.Fatalf("headers %v, want a 400 containing %q", h, tt.wantDesc)
				}
			}
		})
	}
}

// Session calls are audited like direct machine calls, the session id as
// the target: ok, error, no-response when the session never answers, and
// no-response at once for an offline one.
func TestSessionCallAudit(t *testing.T) {
	f := sessionWatchFixture(t, []string{"web01"}, sidA, sidB)
	fn := "latencyCheck"
	f.request(fleet.SessionFnSubject(sidA, fn, wAlice), fleet.CallReply(wAlice, sidA, "k1", 0), "k1", `{"n":1}`)
	f.request(fleet.SessionFnSubject(sidB, fn, wAlice), fleet.CallReply(wAlice, sidB, "k2", 0), "k2", `{"n":2}`)
	f.request(fleet.SessionFnSubject(sidC, fn, wAlice), fleet.CallReply(wAlice, sidC, "k3", 0), "k3", `{"n":3}`)
	f.request(fleet.SessionFnSubject(sidA, fn, wAlice), fleet.CallReply(wAlice, sidA, "k4", 0), "k4", `{"n":4}`)
	f.sessionAnswer(fleet.CallReply(wAlice, sidA, "k1", 0), "k1", `{"n":1}`, 0)
	f.sessionAnswer(fleet.CallReply(wAlice, sidB, "k2", 0), "k2", `{"n":2}`, fleet.CodeBadRequest)
	// An answer naming other arguments than the call's is not its answer.
	f.sessionAnswer(fleet.CallReply(wAlice, sidA, "k4", 0), "k4", `{"n":"forged"}`, 0)
	f.flushAll()
	if len(f.recs) != 4 {
		t.Fatalf("got %d records, want 4: %+v", len(f.recs), f.recs)
	}
	want := map[string]string{"k1": fleet.OutcomeOK, "k2": fleet.OutcomeError, "k3": fleet.OutcomeNoResponse, "k4": fleet.OutcomeNoResponse}
	target := map[string]string{"k1": sidA, "k2": sidB, "k3": sidC, "k4": sidA}
	for _, r := range f.recs {
		var call string
		for k := range want {
			if fleet.SessionFnSubject(target[k], fn, wAlice) == r.Subject && string(r.Args) == `{"n":`+k[1:]+`}` {
				call = k
			}
		}
		if call == "" {
			t.Fatalf("unexpected record %+v", r)
		}
		if r.Targets != 1 || r.Broadcast || r.Function != fn || outcomes(r)[target[call]] != want[call] {
			t.Errorf("%s: record %+v, want one target %s %s", call, r, target[call], want[call])
		}
		if call == "k3" && (r.Outcomes[0].Code != fleet.CodeUnavailable) {
			t.Errorf("offline session's outcome %+v, want no-response 503", r.Outcomes[0])
		}
	}
}

// A session may publish under its own reply subjects in any operator's
// inbox: under a machine broadcast's call token its "answer" does not
// make it a target of the broadcast, nor of a machine's direct call.
func TestSessionCannotJoinMachineCalls(t *testing.T) {
	f := sessionWatchFixture(t, []string{"web01"}, sidA)
	f.request(fleet.AllSubject("sw-list", wAlice), fleet.CallReply(wAlice, fleet.ReplyToAll, "b1", 0), "b1", ``)
	f.request(fleet.FnSubject("web01", "sw-list", wAlice), fleet.CallReply(wAlice, "web01", "d1", 0), "d1", ``)
	f.sessionAnswer(fleet.CallReply(wAlice, sidA, "b1", 0), "b1", ``, 0)
	f.sessionAnswer(fleet.CallReply(wAlice, sidA, "d1", 0), "d1", ``, 0)
	f.flushAll()
	if len(f.recs) != 2 {
		t.Fatalf("got %d records, want 2", len(f.recs))
	}
	for _, r := range f.recs {
		if _, in := outcomes(r)[sidA]; in || r.Targets != 1 {
			t.Errorf("record %s: outcomes %v; a session answered its way in", r.Subject, outcomes(r))
		}
	}
}
