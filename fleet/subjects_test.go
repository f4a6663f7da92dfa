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
		{"FnSubject", FnSubject("10.0.0.5_web01", "current-load"), "sys.commandControl.fn.10~0~0~5_web01.current-load"},
		{"FnSubject plain", FnSubject("web01", "machine-info"), "sys.commandControl.fn.web01.machine-info"},
		{"AllSubject", AllSubject("sw-list"), "sys.commandControl.all.sw-list"},
		{"CtlSubject", CtlSubject(opKey, OpMachinesList), "sys.commandControl.ctl." + opKey + ".machines.list"},
		{"OperatorInbox", OperatorInbox(opKey), "_INBOX_cc." + opKey},
		{"PresenceEventSubject joined", PresenceEventSubject(EventJoined, "10.0.0.5_web01"), "sys.commandControl.presence.event.joined.10~0~0~5_web01"},
		{"PresenceEventSubject left", PresenceEventSubject(EventLeft, "web01"), "sys.commandControl.presence.event.left.web01"},
		{"PresenceSnapshotSubject", PresenceSnapshotSubject, "sys.commandControl.presence.snapshot"},
		{"PresenceEventsWildcard", PresenceEventsWildcard, "sys.commandControl.presence.event.>"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestParseFnSubject(t *testing.T) {
	tests := []struct {
		subject   string
		token, fn string
		wantErr   string
	}{
		{subject: "sys.commandControl.fn.10~0~0~5_web01.current-load", token: "10~0~0~5_web01", fn: "current-load"},
		{subject: "sys.commandControl.fn.web01.x", token: "web01", fn: "x"},
		{subject: "sys.commandControl.all.sw-list", fn: "sw-list"},
		{subject: FnSubject("10.1.2.3_db", "machine-info"), token: "10~1~2~3_db", fn: "machine-info"},
		{subject: AllSubject("machine-info"), fn: "machine-info"},

		{subject: "sys.commandControl.fn.web01", wantErr: "malformed call subject"},
		{subject: "sys.commandControl.fn.web01.", wantErr: "malformed call subject"},
		{subject: "sys.commandControl.fn..load", wantErr: "malformed call subject"},
		{subject: "sys.commandControl.fn.web01.a.b", wantErr: "malformed call subject"},
		{subject: "sys.commandControl.fn.", wantErr: "malformed call subject"},
		{subject: "sys.commandControl.all.", wantErr: "malformed call subject"},
		{subject: "sys.commandControl.all.a.b", wantErr: "malformed call subject"},
		{subject: "sys.commandControl.fn", wantErr: "not a call subject"},
		{subject: "sys.commandControl.all", wantErr: "not a call subject"},
		{subject: "sys.commandControl.ctl.U.whoami", wantErr: "not a call subject"},
		{subject: "sys.commandControl.fnx.web01.load", wantErr: "not a call subject"},
		{subject: "", wantErr: "not a call subject"},
		{subject: "other.fn.web01.load", wantErr: "not a call subject"},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			tok, fn, err := ParseFnSubject(tt.subject)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseFnSubject(%q): got (%q, %q, %v), want an error containing %q", tt.subject, tok, fn, err, tt.wantErr)
				}
				if tok != "" || fn != "" {
					t.Fatalf("ParseFnSubject(%q) returned (%q, %q) with an error", tt.subject, tok, fn)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFnSubject(%q): %v", tt.subject, err)
			}
			if tok != tt.token {
				t.Errorf("token: got %q, want %q", tok, tt.token)
			}
			if fn != tt.fn {
				t.Errorf("fn: got %q, want %q", fn, tt.fn)
			}
		})
	}
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

// FuzzParseFnSubject: whatever ParseFnSubject accepts has a non-empty
// single-token function and rebuilds to the same subject.
func FuzzParseFnSubject(f *testing.F) {
	for _, s := range []string{"sys.commandControl.fn.a.b", "sys.commandControl.all.x", "sys.commandControl.fn..", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		tok, fn, err := ParseFnSubject(subject)
		if err != nil {
			return
		}
		if fn == "" || strings.Contains(fn, ".") || strings.Contains(tok, ".") {
			t.Fatalf("ParseFnSubject(%q) = (%q, %q)", subject, tok, fn)
		}
		rebuilt := AllRoot + "." + fn
		if tok != "" {
			rebuilt = FnRoot + "." + tok + "." + fn
		}
		if rebuilt != subject {
			t.Fatalf("rebuilt %q, want %q", rebuilt, subject)
		}
	})
}
