package fleet

import (
	"strings"
	"testing"
)

const opKey = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"

func TestSubjectBuilders(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"FnSubject", FnSubject("10.0.0.5_web01", "current-load", opKey), "sys.commandControl.fn.10~0~0~5_web01.current-load." + opKey},
		{"FnSubject plain", FnSubject("web01", "machine-info", "K"), "sys.commandControl.fn.web01.machine-info.K"},
		{"AllSubject", AllSubject("sw-list", "K"), "sys.commandControl.all.sw-list.K"},
		{"CallReply", CallReply("K", "web01", "c1", 2), "_INBOX_cc.K.web01.c1.2"},
		{"CallReply broadcast", CallReply("K", ReplyToAll, "c1", 0), "_INBOX_cc.K.@all.c1.0"},
		{"CallReplies", CallReplies("K", "c1"), "_INBOX_cc.K.*.c1.>"},
		{"DirectInbox", DirectInbox("K", "10.0.0.5_web01"), "_INBOX_cc.K.10~0~0~5_web01"},
		{"DiscoveryInbox", DiscoveryInbox("K"), "_INBOX_cc.K.@srv"},
		{"MachineReplies", MachineReplies("web01"), "_INBOX_cc.*.web01.>"},
		{"CtlSubject", CtlSubject(opKey, OpMachinesList), "sys.commandControl.ctl." + opKey + ".machines.list"},
		{"OperatorInbox", OperatorInbox(opKey), "_INBOX_cc." + opKey},
		{"PresenceEventSubject joined", PresenceEventSubject(EventJoined, "10.0.0.5_web01"), "sys.commandControl.presence.event.joined.10~0~0~5_web01"},
		{"PresenceEventSubject left", PresenceEventSubject(EventLeft, "web01"), "sys.commandControl.presence.event.left.web01"},
		{"PresenceSnapshotSubject", PresenceSnapshotSubject, "sys.commandControl.presence.snapshot"},
		{"PresenceEventsWildcard", PresenceEventsWildcard, "sys.commandControl.presence.event.>"},
		{"DirectCallsWildcard", DirectCallsWildcard, "sys.commandControl.fn.>"},
		{"BroadcastsWildcard", BroadcastsWildcard, "sys.commandControl.all.>"},
		{"BroadcastCallsWildcard", BroadcastCallsWildcard, "sys.commandControl.all.*.*"},
		{"MachineCallsWildcard", MachineCallsWildcard(MachineToken("10.0.0.5_web01")), "sys.commandControl.fn.10~0~0~5_web01.*.*"},
		{"CallerCallsWildcards", strings.Join(CallerCallsWildcards("K"), " "), "sys.commandControl.fn.*.*.K sys.commandControl.all.*.K"},
		{"CallerFnWildcards", strings.Join(CallerFnWildcards("sw-list", "K"), " "), "sys.commandControl.fn.*.sw-list.K sys.commandControl.all.sw-list.K"},
		{"CtlWildcard", CtlWildcard("K"), "sys.commandControl.ctl.K.>"},
		{"CtlOpWildcard", CtlOpWildcard(OpWhoAmI), "sys.commandControl.ctl.*.whoami"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestParseFnSubject(t *testing.T) {
	tests := []struct {
		subject string
		want    Call
		wantErr string
	}{
		{subject: "sys.commandControl.fn.10~0~0~5_web01.current-load.K", want: Call{Token: "10~0~0~5_web01", Function: "current-load", Caller: "K"}},
		{subject: "sys.commandControl.all.sw-list.K", want: Call{Function: "sw-list", Caller: "K"}},
		{subject: FnSubject("10.1.2.3_db", "machine-info", opKey), want: Call{Token: "10~1~2~3_db", Function: "machine-info", Caller: opKey}},
		{subject: AllSubject("machine-info", opKey), want: Call{Function: "machine-info", Caller: opKey}},

		{subject: "sys.commandControl.fn.web01.x", wantErr: "malformed call subject"},
		{subject: "sys.commandControl.fn.web01.x.", wantErr: "malformed call subject"},
		{subject: "sys.commandControl.fn..load.K", wantErr: "malformed call subject"},
		{subject: "sys.commandControl.fn.web01.a.b.c", wantErr: "malformed call subject"},
		{subject: "sys.commandControl.fn.", wantErr: "malformed call subject"},
		{subject: "sys.commandControl.all.", wantErr: "malformed call subject"},
		{subject: "sys.commandControl.all.sw-list", wantErr: "malformed call subject"},
		{subject: "sys.commandControl.all.a.b.c", wantErr: "malformed call subject"},
		{subject: "sys.commandControl.fn", wantErr: "not a call subject"},
		{subject: "sys.commandControl.ctl.U.whoami", wantErr: "not a call subject"},
		{subject: "sys.commandControl.fnx.web01.load.K", wantErr: "not a call subject"},
		{subject: "", wantErr: "not a call subject"},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			got, err := ParseFnSubject(tt.subject)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseFnSubject(%q): got (%+v, %v), want an error containing %q", tt.subject, got, err, tt.wantErr)
				}
				if got != (Call{}) {
					t.Fatalf("ParseFnSubject(%q) returned %+v with an error", tt.subject, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFnSubject(%q): %v", tt.subject, err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAgentReply(t *testing.T) {
	tests := []struct {
		name, reply, caller, tok string
		want, wantErr            string
	}{
		{"direct", "_INBOX_cc.K.web01.c1.0", "K", "web01", "_INBOX_cc.K.web01.c1.0", ""},
		{"broadcast", "_INBOX_cc.K.@all.c1.0", "K", "web01", "_INBOX_cc.K.web01.c1.0", ""},
		{"broadcast, no copy", "_INBOX_cc.K.@all.c1", "K", "web01", "_INBOX_cc.K.web01.c1", ""},
		{"nats req mux", "_INBOX_cc.K.web01.NUID.rand", "K", "web01", "_INBOX_cc.K.web01.NUID.rand", ""},
		{"deep copy", "_INBOX_cc.K.@all.c1.a.b", "K", "web01", "_INBOX_cc.K.web01.c1.a.b", ""},
		{"another caller's inbox", "_INBOX_cc.ADMIN.web01.c1.0", "K", "web01", "", "not the caller's inbox"},
		{"another machine", "_INBOX_cc.K.web02.c1.0", "K", "web01", "", "not this machine"},
		{"control subject", "sys.commandControl.ctl.ADMIN.operators.add", "K", "web01", "", "not under _INBOX_cc"},
		{"presence", "sys.commandControl.presence.event.left.web02", "K", "web01", "", "not under _INBOX_cc"},
		{"plain inbox", "_INBOX_cc.K.NUID", "K", "web01", "", "want _INBOX_cc"},
		{"nats mux, no target", "_INBOX_cc.K.NUID.rand", "K", "web01", "", "not this machine"},
		{"empty token", "_INBOX_cc.K..c1", "K", "web01", "", "want _INBOX_cc"},
		{"its own discovery inbox", "_INBOX_cc.K.web01.@srv.n", "K", "web01", "", "reserved token"},
		{"a broadcast aimed at discovery", "_INBOX_cc.K.@all.@srv", "K", "web01", "", "reserved token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AgentReply(tt.reply, tt.caller, tt.tok)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("AgentReply(%q): got (%q, %v), want an error containing %q", tt.reply, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("AgentReply(%q): got (%q, %v), want %q", tt.reply, got, err, tt.want)
			}
		})
	}
}

// FuzzAgentReply: whatever subject an agent is told to answer on, it
// answers only under its own token in the caller's inbox, the one subject
// space the broker lets it publish in.
func FuzzAgentReply(f *testing.F) {
	for _, s := range []string{"_INBOX_cc.K.@all.c.0", "_INBOX_cc.K.m.c", "_INBOX_cc.K.m", "sys.commandControl.ctl.K.x", "_INBOX_cc.K.@all..", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, reply string) {
		out, err := AgentReply(reply, "K", "m")
		if err != nil {
			return
		}
		if !strings.HasPrefix(out, "_INBOX_cc.K.m.") {
			t.Fatalf("AgentReply(%q) = %q: outside the machine's own replies", reply, out)
		}
		r, err := ParseCallReply(out)
		if err != nil || r.Caller != "K" || r.Target != "m" {
			t.Fatalf("AgentReply(%q) = %q, which parses as (%+v, %v)", reply, out, r, err)
		}
	})
}

func TestParseCtlSubject(t *testing.T) {
	tests := []struct {
		subject      string
		operator, op string
		wantErr      string
	}{
		{subject: CtlSubject(opKey, OpWhoAmI), operator: opKey, op: "whoami"},
		{subject: CtlSubject(opKey, OpMachinesAccept), operator: opKey, op: "machines.accept"},
		{subject: "sys.commandControl.ctl.K.a.b.c", operator: "K", op: "a.b.c"},

		{subject: "sys.commandControl.ctl.K", wantErr: "malformed control subject"},
		{subject: "sys.commandControl.ctl.K.", wantErr: "malformed control subject"},
		{subject: "sys.commandControl.ctl..whoami", wantErr: "malformed control subject"},
		{subject: "sys.commandControl.ctl.", wantErr: "malformed control subject"},
		{subject: "sys.commandControl.ctl", wantErr: "not a control subject"},
		{subject: "sys.commandControl.fn.web01.load", wantErr: "not a control subject"},
		{subject: "", wantErr: "not a control subject"},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			operator, op, err := ParseCtlSubject(tt.subject)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseCtlSubject(%q): got (%q, %q, %v), want an error containing %q", tt.subject, operator, op, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCtlSubject(%q): %v", tt.subject, err)
			}
			if operator != tt.operator {
				t.Errorf("operator: got %q, want %q", operator, tt.operator)
			}
			if op != tt.op {
				t.Errorf("op: got %q, want %q", op, tt.op)
			}
		})
	}
}

// FuzzParseFnSubject: whatever ParseFnSubject accepts has single-token,
// non-empty parts and rebuilds to the same subject.
func FuzzParseFnSubject(f *testing.F) {
	for _, s := range []string{"sys.commandControl.fn.a.b.K", "sys.commandControl.all.x.K", "sys.commandControl.fn...", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		c, err := ParseFnSubject(subject)
		if err != nil {
			return
		}
		for _, p := range []string{c.Function, c.Caller} {
			if p == "" || strings.Contains(p, ".") {
				t.Fatalf("ParseFnSubject(%q) = %+v", subject, c)
			}
		}
		rebuilt := AllRoot + "." + c.Function + "." + c.Caller
		if c.Token != "" {
			rebuilt = FnRoot + "." + c.Token + "." + c.Function + "." + c.Caller
		}
		if rebuilt != subject {
			t.Fatalf("rebuilt %q, want %q", rebuilt, subject)
		}
	})
}
