package fleet

import (
	"slices"
	"strings"
	"testing"
)

func TestSysSubjectBuilders(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"AccountConnectSubject", AccountConnectSubject("FLEET"), "$SYS.ACCOUNT.FLEET.CONNECT"},
		{"AccountDisconnectSubject", AccountDisconnectSubject("FLEET"), "$SYS.ACCOUNT.FLEET.DISCONNECT"},
		{"ServerShutdownWildcard", ServerShutdownWildcard, "$SYS.SERVER.*.SHUTDOWN"},
		{"ServerPingSubject", ServerPingSubject, "$SYS.REQ.SERVER.PING"},
		{"AuthCalloutSubject", AuthCalloutSubject, "$SYS.REQ.USER.AUTH"},
		{"ServerRequestSubject", ServerRequestSubject("NA", "CONNZ"), "$SYS.REQ.SERVER.NA.CONNZ"},
		{"ServerRequestWildcard", ServerRequestWildcard("KICK"), "$SYS.REQ.SERVER.*.KICK"},
		{"DiscoveryWildcard", DiscoveryWildcard, "$SRV.>"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	want := []string{"$SRV.PING", "$SRV.PING.cc-agent", "$SRV.PING.cc-agent.*", "$SRV.INFO", "$SRV.INFO.cc-agent", "$SRV.INFO.cc-agent.*",
		"$SRV.STATS", "$SRV.STATS.cc-agent", "$SRV.STATS.cc-agent.*"}
	if got := DiscoverySubjects(AgentServiceName); !slices.Equal(got, want) {
		t.Errorf("DiscoverySubjects: got %q, want %q", got, want)
	}
	want = []string{"$SRV.PING", "$SRV.PING.cc-agent", "$SRV.PING.cc-agent.10~0~0~5_web01", "$SRV.INFO", "$SRV.INFO.cc-agent", "$SRV.INFO.cc-agent.10~0~0~5_web01",
		"$SRV.STATS", "$SRV.STATS.cc-agent", "$SRV.STATS.cc-agent.10~0~0~5_web01"}
	if got := AgentDiscoverySubjects("10.0.0.5_web01"); !slices.Equal(got, want) {
		t.Errorf("AgentDiscoverySubjects: got %q, want %q", got, want)
	}
}

func TestIsSysSubject(t *testing.T) {
	for s, want := range map[string]bool{
		"$SYS.SERVER.NA.SHUTDOWN": true, "$SYS.": true, "$SYS": false, "$SYSX.A": false,
		SiteSysSubject("dc2", "$SYS.SERVER.NA.SHUTDOWN"): false, "": false,
	} {
		if got := IsSysSubject(s); got != want {
			t.Errorf("IsSysSubject(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestParseServerEvent(t *testing.T) {
	tests := []struct {
		subject string
		want    ServerEvent
		wantErr bool
	}{
		{subject: "$SYS.ACCOUNT.FLEET.CONNECT", want: ServerEvent{Kind: SysConnect, Account: "FLEET"}},
		{subject: "$SYS.ACCOUNT.FLEET.DISCONNECT", want: ServerEvent{Kind: SysDisconnect, Account: "FLEET"}},
		{subject: "$SYS.SERVER.NDXYZ.SHUTDOWN", want: ServerEvent{Kind: SysShutdown, Server: "NDXYZ"}},
		{subject: AccountConnectSubject("CTL"), want: ServerEvent{Kind: SysConnect, Account: "CTL"}},

		{subject: "$SYS.SERVER.*.SHUTDOWN", want: ServerEvent{Kind: SysShutdown, Server: "*"}}, // the wildcard parses as a name
		{subject: "$SYS.SERVER..SHUTDOWN", wantErr: true},
		{subject: "$SYS.SERVER.NA.B.SHUTDOWN", wantErr: true},
		{subject: "$SYS.SERVER.NA.CONNECT", wantErr: true},
		{subject: "$SYS.ACCOUNT.FLEET.SHUTDOWN", wantErr: true},
		{subject: "$SYS.ACCOUNT.FLEET.CONNECT.x", wantErr: true},
		{subject: "$SYS.ACCOUNT.FLEET", wantErr: true},
		{subject: "$SYS.REQ.SERVER.PING", wantErr: true},
		{subject: "$SYS.SERVER", wantErr: true},
		{subject: "SYS.SERVER.NA.SHUTDOWN", wantErr: true},
		{subject: SiteSysSubject("dc2", "$SYS.SERVER.NA.SHUTDOWN"), wantErr: true},
		{subject: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			got, err := ParseServerEvent(tt.subject)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "is not a server event") || got != (ServerEvent{}) {
					t.Fatalf("ParseServerEvent(%q) = (%+v, %v), want an error", tt.subject, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseServerEvent(%q) = (%+v, %v), want %+v", tt.subject, got, err, tt.want)
			}
		})
	}
}

// FuzzParseServerEvent: what ParseServerEvent accepts rebuilds to the
// same subject with the builders the control service subscribes with.
func FuzzParseServerEvent(f *testing.F) {
	for _, s := range []string{"$SYS.ACCOUNT.FLEET.CONNECT", "$SYS.SERVER.NA.SHUTDOWN", "$SYS.SERVER..SHUTDOWN", "$SYS.REQ.SERVER.PING", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		ev, err := ParseServerEvent(subject)
		if err != nil {
			return
		}
		var rebuilt string
		switch ev.Kind {
		case SysConnect:
			rebuilt = AccountConnectSubject(ev.Account)
		case SysDisconnect:
			rebuilt = AccountDisconnectSubject(ev.Account)
		case SysShutdown:
			rebuilt = SysRoot + ".SERVER." + ev.Server + ".SHUTDOWN"
		default:
			t.Fatalf("ParseServerEvent(%q) = %+v: unknown kind", subject, ev)
		}
		if name := ev.Account + ev.Server; name == "" || strings.Contains(name, ".") || rebuilt != subject {
			t.Fatalf("ParseServerEvent(%q) = %+v, which rebuilds to %q", subject, ev, rebuilt)
		}
	})
}
