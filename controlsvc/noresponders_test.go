package controlsvc

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// The responder answers "no responders" exactly where no agent will:
// each copy of a direct call to a machine that is not ONLINE, and a
// broadcast when no machine is ONLINE; a 400 naming the shape for a
// reply subject in the caller's own inbox that no agent answers on; and
// nothing into another operator's inbox.
func TestOfflineResponder(t *testing.T) {
	tests := []struct {
		name            string
		online          []string
		subject, reply  string
		wantStatus      string // "503", "400" or "" for no answer
		wantDescription string
	}{
		{"direct, online", []string{"web01"}, fleet.FnSubject("web01", fleet.FnSwList, wBob), fleet.CallReply(wBob, "web01", "c", 0), "", ""},
		{"direct, offline", []string{"web01"}, fleet.FnSubject("db01", fleet.FnSwList, wBob), fleet.CallReply(wBob, "db01", "c", 0), "503", ""},
		{"re-sent copy, offline", nil, fleet.FnSubject("db01", fleet.FnSwList, wBob), fleet.CallReply(wBob, "db01", "c", 3), "503", ""},
		{"direct on @all, offline", nil, fleet.FnSubject("10.0.0.5_db", fleet.FnSwList, wBob), fleet.CallReply(wBob, fleet.ReplyToAll, "c", 0), "503", ""},
		{"broadcast, someone online", []string{"web01"}, fleet.AllSubject(fleet.FnSwList, wBob), fleet.CallReply(wBob, fleet.ReplyToAll, "c", 0), "", ""},
		{"broadcast, nobody online", nil, fleet.AllSubject(fleet.FnSwList, wBob), fleet.CallReply(wBob, fleet.ReplyToAll, "c", 0), "503", ""},
		{"broadcast aimed at an online machine", []string{"web01"}, fleet.AllSubject(fleet.FnSwList, wBob), fleet.CallReply(wBob, "web01", "c", 0), "", ""},
		{"broadcast aimed at an offline machine", []string{"web01"}, fleet.AllSubject(fleet.FnSwList, wBob), fleet.CallReply(wBob, "db01", "c", 0), "503", ""},
		{"broadcast aimed at the control inbox", []string{"web01"}, fleet.AllSubject(fleet.FnSwList, wBob), fleet.ControlInbox(wBob) + ".c", "400", "no agent answers on the reply subject"},
		{"malformed reply in own inbox", []string{"web01"}, fleet.FnSubject("web01", fleet.FnSwList, wBob), fleet.OperatorInbox(wBob) + ".x", "400", "no agent answers on the reply subject"},
		{"reply naming another machine", nil, fleet.FnSubject("web01", fleet.FnSwList, wBob), fleet.CallReply(wBob, "web02", "c", 0), "400", "--inbox-prefix " + fleet.DirectInbox(wBob, "<machine id>")},
		{"another operator's inbox", nil, fleet.FnSubject("db01", fleet.FnSwList, wBob), fleet.CallReply(wAlice, "db01", "c", 0), "", ""},
		{"not an inbox", nil, fleet.FnSubject("db01", fleet.FnSwList, wBob), fleet.PresenceEventSubject(fleet.EventLeft, "db01"), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			machines := fakeMachines{}
			for _, id := range tt.online {
				machines[id] = true
			}
			var sent []*nats.Msg
			r := &offlineResponder{machines: machines, publish: func(m *nats.Msg) error { sent = append(sent, m); return nil }}
			req, ok := parseCallRequest(&nats.Msg{Subject: tt.subject, Reply: tt.reply, Header: nats.Header{}})
			if !ok {
				t.Fatalf("%s is not a call", tt.subject)
			}
			r.request(req)
			if tt.wantStatus == "" {
				if len(sent) != 0 {
					t.Fatalf("answered %+v, want nothing", sent[0])
				}
				return
			}
			if len(sent) != 1 || sent[0].Subject != tt.reply || len(sent[0].Data) != 0 {
				t.Fatalf("sent %+v, want one empty answer on %s", sent, tt.reply)
			}
			h := sent[0].Header
			switch tt.wantStatus {
			case "503":
				if !fleet.IsNoResponders(h.Get(fleet.HeaderStatus), len(sent[0].Data)) || h.Get(fleet.HeaderDescription) != "No Responders" {
					t.Fatalf("headers %v, want the broker's no-responders status", h)
				}
			case "400":
				if h.Get(fleet.HeaderErrorCode) != "400" || !strings.Contains(h.Get(fleet.HeaderError), tt.wantDescription) {
					t.Fatalf("headers %v, want a 400 containing %q", h, tt.wantDescription)
				}
			}
		})
	}
}
