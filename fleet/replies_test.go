package fleet

import (
	"strings"
	"testing"
)

func TestReplyBuilders(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"ControlInbox", ControlInbox("K"), "_INBOX_cc.K.@ctl"},
		{"ControlReplies", ControlReplies(), "_INBOX_cc.*.@ctl.>"},
		{"DiscoveryReplies", DiscoveryReplies(), "_INBOX_cc.*.@srv.>"},
		{"OperatorInboxWildcard", OperatorInboxWildcard("K"), "_INBOX_cc.K.>"},
		{"InboxesWildcard", InboxesWildcard, "_INBOX_cc.>"},
		{"MachineDiscoveryInbox", MachineDiscoveryInbox("K", "10.0.0.5_web01"), "_INBOX_cc.K.10~0~0~5_web01.@srv"},
		{"MachineDiscoveryReplies", MachineDiscoveryReplies("K", "n1"), "_INBOX_cc.K.*.@srv.n1"},
		{"CallReply dotted machine", CallReply("K", MachineToken("10.0.0.5_web01"), "c1", 3), "_INBOX_cc.K.10~0~0~5_web01.c1.3"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestParseCallReply(t *testing.T) {
	tests := []struct {
		subject string
		want    ReplySubject
		wantErr string
	}{
		{subject: "_INBOX_cc.K.web01.c1.0", want: ReplySubject{Caller: "K", Target: "web01", Call: "c1", Copy: "0"}},
		{subject: "_INBOX_cc.K.@all.c1.2", want: ReplySubject{Caller: "K", Target: ReplyToAll, Call: "c1", Copy: "2"}},
		{subject: "_INBOX_cc.K.web01.c1", want: ReplySubject{Caller: "K", Target: "web01", Call: "c1"}},
		{subject: "_INBOX_cc.K.web01.c1.a.b", want: ReplySubject{Caller: "K", Target: "web01", Call: "c1", Copy: "a.b"}},
		{subject: "_INBOX_cc.K.@ctl.x", want: ReplySubject{Caller: "K", Target: "@ctl", Call: "x"}},
		{subject: CallReply(opKey, "10~0~0~5_web01", "c9", 7), want: ReplySubject{Caller: opKey, Target: "10~0~0~5_web01", Call: "c9", Copy: "7"}},

		{subject: "", wantErr: "not under _INBOX_cc"},
		{subject: "_INBOX.K.web01.c1", wantErr: "not under _INBOX_cc"},
		{subject: "_INBOX_ccX.K.web01.c1", wantErr: "not under _INBOX_cc"},
		{subject: "_INBOX_cc", wantErr: "not under _INBOX_cc"},
		{subject: "_INBOX_cc.K", wantErr: "want _INBOX_cc"},
		{subject: "_INBOX_cc.K.web01", wantErr: "want _INBOX_cc"},
		{subject: "_INBOX_cc..web01.c1", wantErr: "want _INBOX_cc"},
		{subject: "_INBOX_cc.K..c1", wantErr: "want _INBOX_cc"},
		{subject: "_INBOX_cc.K.web01.", wantErr: "want _INBOX_cc"},
		{subject: "_INBOX_cc.K.web01.c1.", wantErr: "want _INBOX_cc"},
		// A machine's discovery inbox, and the other reserved tokens in
		// the call position: no call's reply.
		{subject: MachineDiscoveryInbox("K", "10.0.0.5_web01") + ".n", wantErr: "reserved token \"@srv\""},
		{subject: "_INBOX_cc.K.web01.@all.0", wantErr: "reserved token"},
		{subject: "_INBOX_cc.K.web01.@ctl", wantErr: "reserved token"},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			got, err := ParseCallReply(tt.subject)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseCallReply(%q): got (%+v, %v), want an error containing %q", tt.subject, got, err, tt.wantErr)
				}
				if got != (ReplySubject{}) {
					t.Fatalf("ParseCallReply(%q) returned %+v with an error", tt.subject, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseCallReply(%q): got (%+v, %v), want %+v", tt.subject, got, err, tt.want)
			}
		})
	}
}

func TestCallReplyFor(t *testing.T) {
	direct := Call{Token: "web01", Function: "sw-list", Caller: "K"}
	all := Call{Function: "sw-list", Caller: "K"}
	tests := []struct {
		name    string
		call    Call
		reply   string
		want    ReplySubject
		wantErr string
	}{
		{"direct", direct, "_INBOX_cc.K.web01.c1.0", ReplySubject{Caller: "K", Target: "web01", Call: "c1", Copy: "0"}, ""},
		{"direct, @all", direct, "_INBOX_cc.K.@all.c1.0", ReplySubject{Caller: "K", Target: ReplyToAll, Call: "c1", Copy: "0"}, ""},
		{"broadcast", all, "_INBOX_cc.K.@all.c1", ReplySubject{Caller: "K", Target: ReplyToAll, Call: "c1"}, ""},
		{"direct, another machine", direct, "_INBOX_cc.K.web02.c1.0", ReplySubject{}, "names target \"web02\""},
		{"broadcast naming a machine", all, "_INBOX_cc.K.web01.c1.0", ReplySubject{Caller: "K", Target: "web01", Call: "c1", Copy: "0"}, ""},
		{"broadcast naming the control inbox", all, "_INBOX_cc.K.@ctl.c1", ReplySubject{}, "no machine token"},
		{"broadcast naming discovery", all, "_INBOX_cc.K.@srv.c1", ReplySubject{}, "no machine token"},
		{"direct, the machine's discovery inbox", direct, "_INBOX_cc.K.web01.@srv.n", ReplySubject{}, "reserved token"},
		{"broadcast, a machine's discovery inbox", all, "_INBOX_cc.K.web01.@srv.n", ReplySubject{}, "reserved token"},
		{"another caller's inbox", direct, "_INBOX_cc.J.web01.c1.0", ReplySubject{}, "not the caller's inbox _INBOX_cc.K"},
		{"plain inbox", direct, "_INBOX_cc.K.x", ReplySubject{}, "want _INBOX_cc"},
		{"not an inbox", direct, "sys.commandControl.ctl.K.whoami", ReplySubject{}, "not under _INBOX_cc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CallReplyFor(tt.call, tt.reply)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || got != (ReplySubject{}) {
					t.Fatalf("CallReplyFor(%+v, %q) = (%+v, %v), want an error containing %q", tt.call, tt.reply, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("CallReplyFor(%+v, %q) = (%+v, %v), want %+v", tt.call, tt.reply, got, err, tt.want)
			}
		})
	}
}

func TestInboxOwner(t *testing.T) {
	tests := []struct {
		subject, want string
		ok            bool
	}{
		{"_INBOX_cc.K.web01.c1.0", "K", true},
		{"_INBOX_cc.K", "K", true},
		{"_INBOX_cc.K.@ctl.x", "K", true},
		{OperatorInbox(opKey) + ".x", opKey, true},
		{"_INBOX_cc.", "", false},
		{"_INBOX_cc..x", "", false},
		{"_INBOX_cc", "", false},
		{"_INBOX.K.x", "", false},
		{"sys.commandControl.ctl.K.whoami", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := InboxOwner(tt.subject)
		if got != tt.want || ok != tt.ok {
			t.Errorf("InboxOwner(%q) = (%q, %v), want (%q, %v)", tt.subject, got, ok, tt.want, tt.ok)
		}
	}
}

func TestIsControlReply(t *testing.T) {
	tests := []struct {
		reply, caller string
		want          bool
	}{
		{"_INBOX_cc.K.@ctl.abc", "K", true},
		{"_INBOX_cc.K.@ctl.a.b", "K", true},
		{ControlInbox(opKey) + ".1", opKey, true},
		{"_INBOX_cc.K.@ctl", "K", false},       // the prefix itself is no reply subject
		{"_INBOX_cc.K.@ctlx.abc", "K", false},  // another token
		{"_INBOX_cc.K.@ctl.abc", "J", false},   // another operator's
		{"_INBOX_cc.KK.@ctl.abc", "K", false},  // a longer key
		{"_INBOX_cc.K.web01.c1.0", "K", false}, // a machine's reply
		{"_INBOX_cc.K.@srv.abc", "K", false},   // discovery
		{"sys.commandControl.ctl.K.x", "K", false},
		{"", "K", false},
	}
	for _, tt := range tests {
		if got := IsControlReply(tt.reply, tt.caller); got != tt.want {
			t.Errorf("IsControlReply(%q, %q) = %v, want %v", tt.reply, tt.caller, got, tt.want)
		}
	}
}

func TestIsInboxSubject(t *testing.T) {
	for s, want := range map[string]bool{
		"_INBOX_cc.K.x": true, "_INBOX_cc.": true, "_INBOX_cc": false, "_INBOX.K": false,
		"sys.commandControl.fn.m.f.K": false, "": false,
	} {
		if got := IsInboxSubject(s); got != want {
			t.Errorf("IsInboxSubject(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestIsNoResponders(t *testing.T) {
	tests := []struct {
		status string
		body   int
		want   bool
	}{
		{StatusNoResponders, 0, true},
		{"503", 1, false}, // an agent's 503 error has a body
		{"", 0, false},
		{"408", 0, false},
	}
	for _, tt := range tests {
		if got := IsNoResponders(tt.status, tt.body); got != tt.want {
			t.Errorf("IsNoResponders(%q, %d) = %v, want %v", tt.status, tt.body, got, tt.want)
		}
	}
}

func TestParseMachineDiscoveryReply(t *testing.T) {
	tests := []struct {
		subject, caller, machine, rest, wantErr string
	}{
		{subject: MachineDiscoveryInbox("K", "10.0.0.5_web01") + ".n1", caller: "K", machine: "10.0.0.5_web01", rest: "n1"},
		{subject: "_INBOX_cc.K.web01.@srv.a.b", caller: "K", machine: "web01", rest: "a.b"},

		{subject: "_INBOX_cc.K.web01.@srv", wantErr: "not under a machine's discovery inbox"},
		{subject: "_INBOX_cc.K.@srv.n1", wantErr: "not under a machine's discovery inbox"},    // the shared inbox
		{subject: "_INBOX_cc.K.@srv.@srv.n1", wantErr: "bad machine token"},                   // no machine's
		{subject: "_INBOX_cc.K.web01.c1.0", wantErr: "not under a machine's discovery inbox"}, // a call's reply
		{subject: "_INBOX_cc.K.web01.@srvx.n", wantErr: "not under a machine's discovery inbox"},
		{subject: "_INBOX_cc.K.we$b.@srv.n", wantErr: "bad machine token"},
		{subject: "$SRV.INFO", wantErr: "not under _INBOX_cc"},
	}
	for _, tt := range tests {
		caller, machine, rest, err := ParseMachineDiscoveryReply(tt.subject)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || caller+machine+rest != "" {
				t.Errorf("ParseMachineDiscoveryReply(%q) = (%q, %q, %q, %v), want an error containing %q", tt.subject, caller, machine, rest, err, tt.wantErr)
			}
			continue
		}
		if err != nil || caller != tt.caller || machine != tt.machine || rest != tt.rest {
			t.Errorf("ParseMachineDiscoveryReply(%q) = (%q, %q, %q, %v), want (%q, %q, %q)", tt.subject, caller, machine, rest, err, tt.caller, tt.machine, tt.rest)
		}
	}
}

// FuzzParseCallReply: whatever ParseCallReply accepts has single-token,
// non-empty caller, target and call, and rebuilds to the same subject;
// what it refuses, it refuses with an error and a zero value.
func FuzzParseCallReply(f *testing.F) {
	for _, s := range []string{"_INBOX_cc.K.web01.c1.0", "_INBOX_cc.K.@all.c1", "_INBOX_cc.K.m.c.a.b", "_INBOX_cc..", "_INBOX_cc.K.m.c.", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		r, err := ParseCallReply(subject)
		if err != nil {
			if r != (ReplySubject{}) {
				t.Fatalf("ParseCallReply(%q) = (%+v, %v)", subject, r, err)
			}
			return
		}
		for _, p := range []string{r.Caller, r.Target, r.Call} {
			if p == "" || strings.Contains(p, ".") {
				t.Fatalf("ParseCallReply(%q) = %+v", subject, r)
			}
		}
		rebuilt := InboxRoot + "." + r.Caller + "." + r.Target + "." + r.Call
		if r.Copy != "" {
			rebuilt += "." + r.Copy
		}
		if rebuilt != subject {
			t.Fatalf("ParseCallReply(%q) = %+v, which rebuilds to %q", subject, r, rebuilt)
		}
		if owner, ok := InboxOwner(subject); !ok || owner != r.Caller {
			t.Fatalf("InboxOwner(%q) = (%q, %v), ParseCallReply says caller %q", subject, owner, ok, r.Caller)
		}
	})
}

// FuzzInboxOwner: an owner is a non-empty single token, and the subject
// is in that owner's inbox.
func FuzzInboxOwner(f *testing.F) {
	for _, s := range []string{"_INBOX_cc.K.x", "_INBOX_cc.K", "_INBOX_cc.", "_INBOX_cc..x", "_INBOX.K", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		owner, ok := InboxOwner(subject)
		if !ok {
			if owner != "" {
				t.Fatalf("InboxOwner(%q) = (%q, false)", subject, owner)
			}
			return
		}
		if owner == "" || strings.Contains(owner, ".") {
			t.Fatalf("InboxOwner(%q) = %q", subject, owner)
		}
		if subject != OperatorInbox(owner) && !strings.HasPrefix(subject, OperatorInbox(owner)+".") {
			t.Fatalf("InboxOwner(%q) = %q, but the subject is not in %s", subject, owner, OperatorInbox(owner))
		}
	})
}
