package fleet

import (
	"slices"
	"strings"
	"testing"
)

func TestAgentSubjects(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"MachineCallsWildcard", MachineCallsWildcard(MachineToken("10.0.0.5_web01")), "sys.commandControl.fn.10~0~0~5_web01.*.*"},
		{"MachineCallsWildcard plain", MachineCallsWildcard("web01"), "sys.commandControl.fn.web01.*.*"},
		{"BroadcastCallsWildcard", BroadcastCallsWildcard, "sys.commandControl.all.*.*"},
		{"SrvSubject all", SrvSubject(SrvPing, "", ""), "$SRV.PING"},
		{"SrvSubject kind", SrvSubject(SrvInfo, AgentServiceName, ""), "$SRV.INFO.cc-agent"},
		{"SrvSubject instance", SrvSubject(SrvStats, AgentServiceName, "ID1"), "$SRV.STATS.cc-agent.ID1"},
		{"SrvSubject id without name", SrvSubject(SrvStats, "", "ID1"), "$SRV.STATS"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	// A call subject falls under its endpoint's pattern.
	for _, tt := range []struct{ subject, pattern string }{
		{FnSubject("10.0.0.5_web01", "current-load", opKey), MachineCallsWildcard(MachineToken("10.0.0.5_web01"))},
		{AllSubject("sw-list", opKey), BroadcastCallsWildcard},
	} {
		if !matches(tt.pattern, tt.subject) {
			t.Errorf("call subject %q is not under its endpoint %q", tt.subject, tt.pattern)
		}
	}
}

func TestAgentSrvSubjects(t *testing.T) {
	got := AgentSrvSubjects(SrvStats, "ID1")
	want := []string{"$SRV.STATS", "$SRV.STATS.cc-agent", "$SRV.STATS.cc-agent.ID1"}
	if !slices.Equal(got, want) {
		t.Errorf("AgentSrvSubjects: got %q, want %q", got, want)
	}
	// The broker's patterns ("*" for the id) cover what an agent subscribes.
	for _, verb := range SrvVerbs() {
		pats := AgentSrvSubjects(verb, "*")
		for _, s := range AgentSrvSubjects(verb, "NUID123") {
			if !slices.ContainsFunc(pats, func(p string) bool { return matches(p, s) }) {
				t.Errorf("%s is not covered by the patterns %q", s, pats)
			}
		}
	}
	if got := SrvVerbs(); !slices.Equal(got, []string{"PING", "INFO", "STATS"}) {
		t.Errorf("SrvVerbs: got %q", got)
	}
}

func TestCheckDiscoveryReply(t *testing.T) {
	tests := []struct {
		reply string
		ok    bool
	}{
		{DiscoveryInbox(opKey) + ".abc", true},
		{DiscoveryInbox("K") + ".nuid.7", true},
		{DiscoveryInbox("K") + ".a.b.c.d", true},

		{"", false},
		{DiscoveryInbox("K"), false},       // the prefix itself, no token of the asker's
		{DiscoveryInbox("K") + ".", false}, // an empty token
		{DiscoveryInbox("K") + "..x", false},
		{DiscoveryInbox("K") + ".*", false},
		{DiscoveryInbox("K") + ".>", false},
		{DiscoveryInbox("K") + ".a b", false},
		{DiscoveryInbox("K") + ".a\r\nPUB x", false},
		{"_INBOX_cc.*.@srv.x", false},
		{"_INBOX_cc..@srv.x", false},
		{"_INBOX_cc.K.@srvx.y", false},
		{"_INBOX_cc.K.x.@srv.y", false},
		{CallReply("K", "web01", "c1", 0), false},    // another call's replies
		{CallReply("K", ReplyToAll, "c1", 0), false}, // a broadcast's
		{ControlInbox("K") + ".x", false},
		{"_INBOX.abc", false},
		{PresenceEventSubject(EventJoined, "web01"), false},
		{"$SRV.PING", false},
	}
	for _, tt := range tests {
		err := CheckDiscoveryReply(tt.reply)
		if (err == nil) != tt.ok {
			t.Errorf("CheckDiscoveryReply(%q): got %v, want ok=%v", tt.reply, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--inbox-prefix _INBOX_cc.<your key>.@srv") {
			t.Errorf("CheckDiscoveryReply(%q): %q does not say which prefix to ask with", tt.reply, err)
		}
	}
}

func TestCheckMachineDiscoveryReply(t *testing.T) {
	const id = "10.0.0.5_web01"
	tests := []struct {
		reply string
		ok    bool
	}{
		{MachineDiscoveryInbox(opKey, id) + ".n", true},
		{MachineDiscoveryInbox("K", id) + ".a.b", true},

		{"", false},
		{MachineDiscoveryInbox("K", id), false},
		{MachineDiscoveryInbox("K", id) + ".", false},
		{MachineDiscoveryInbox("K", id) + ".*", false},
		{MachineDiscoveryInbox("K", id) + ".>", false},
		{MachineDiscoveryInbox("K", id) + ".a b", false},
		{MachineDiscoveryInbox("K", "10.0.0.6_web02") + ".n", false}, // another machine's
		{MachineDiscoveryInbox("*", id) + ".n", false},
		{DiscoveryInbox("K") + ".n", false}, // the shared inbox: CheckDiscoveryReply's
		{CallReply("K", MachineToken(id), "c1", 0), false},
		{CallReply("K", ReplyToAll, "c1", 0), false},
		{ControlInbox("K") + ".x", false},
		{"$SRV.PING", false},
	}
	for _, tt := range tests {
		err := CheckMachineDiscoveryReply(tt.reply, id)
		if (err == nil) != tt.ok {
			t.Errorf("CheckMachineDiscoveryReply(%q): got %v, want ok=%v", tt.reply, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "_INBOX_cc.<your key>.10~0~0~5_web01.@srv") {
			t.Errorf("CheckMachineDiscoveryReply(%q): %q does not name the inbox", tt.reply, err)
		}
		if err == nil {
			if _, perr := ParseCallReply(tt.reply); perr == nil {
				t.Errorf("CheckMachineDiscoveryReply accepts %q, which parses as a call's reply", tt.reply)
			}
			if !matches(MachineReplies(MachineToken(id)), tt.reply) {
				t.Errorf("accepted %q, which machine %s may not publish on", tt.reply, id)
			}
		}
	}
}

// FuzzCheckDiscoveryReply: whatever a requester sends as reply subject,
// an accepted one is a literal subject under the pattern the broker lets
// agents answer discovery on, and never one of a call's replies.
func FuzzCheckDiscoveryReply(f *testing.F) {
	for _, s := range []string{DiscoveryInbox("K") + ".x", DiscoveryInbox("K") + ".@srv.n", CallReply("K", "web01", "c", 0), "_INBOX_cc.K.@srv.", "$SRV.PING", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, reply string) {
		if CheckDiscoveryReply(reply) != nil {
			return
		}
		if !matches(DiscoveryReplies(), reply) || !publishable(reply) {
			t.Fatalf("accepted %q, outside %s", reply, DiscoveryReplies())
		}
		if owner, ok := InboxOwner(reply); !ok || !strings.HasPrefix(reply, DiscoveryInbox(owner)+".") {
			t.Fatalf("accepted %q: owner %q, %v", reply, owner, ok)
		}
		if r, err := ParseCallReply(reply); err == nil && r.Target != replyToDiscovery {
			t.Fatalf("accepted %q, a call's reply to %q", reply, r.Target)
		}
	})
}

// FuzzCheckMachineDiscoveryReply: an accepted reply subject is a literal
// one the machine itself may publish on, no call's reply, and parses back
// to that machine.
func FuzzCheckMachineDiscoveryReply(f *testing.F) {
	const id = "10.0.0.5_web01"
	for _, s := range []string{MachineDiscoveryInbox("K", id) + ".n", MachineDiscoveryInbox("K", id) + ".@srv", CallReply("K", MachineToken(id), "c", 0), DiscoveryInbox("K") + ".n", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, reply string) {
		if CheckMachineDiscoveryReply(reply, id) != nil {
			return
		}
		if !matches(MachineReplies(MachineToken(id)), reply) || !publishable(reply) {
			t.Fatalf("accepted %q, outside %s", reply, MachineReplies(MachineToken(id)))
		}
		if r, err := ParseCallReply(reply); err == nil {
			t.Fatalf("accepted %q, a call's reply %+v", reply, r)
		}
		if _, m, _, err := ParseMachineDiscoveryReply(reply); err != nil || m != id {
			t.Fatalf("accepted %q, which parses as machine %q (%v)", reply, m, err)
		}
	})
}

// matches reports whether the NATS subject pattern (with * and a final >)
// matches subject.
func matches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}
