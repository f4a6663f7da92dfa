package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
)

// TestBadInputGetsCodedErrors: whatever a client sends, the agent and the
// control service answer with a coded error and keep serving.
func TestBadInputGetsCodedErrors(t *testing.T) {
	svc := startControl(t, "")
	a := startAgent(t, svc, "10.0.0.1_web01", true, echoFn())
	stacktest.WaitFor(t, "agent online", 5*time.Second, func() bool { return stacktest.Online(svc, a.MachineID()) })
	op := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())

	calls := []struct {
		name, subject string
		body          []byte
		code          int
		desc          string
	}{
		{"unknown function", "fn:" + "no-such-fn", nil, fleet.CodeNotFound, "not found"},
		{"not JSON", "fn:" + "echo", []byte("{oops"), fleet.CodeBadRequest, "JSON object"},
		{"JSON array", "fn:" + "echo", []byte("[1,2]"), fleet.CodeBadRequest, "JSON object"},
		{"unknown argument", "fn:" + "echo", []byte(`{"nope":1}`), fleet.CodeBadRequest, `no argument "nope"`},
		{"wrong type", "fn:" + "echo", []byte(`{"msg":42}`), fleet.CodeBadRequest, "want a string"},
		{"oversized", "fn:" + "echo", []byte(`{"msg":"` + strings.Repeat("x", functions.MaxRequestSize) + `"}`), fleet.CodeTooLarge, "at most"},
		{"sw-list bad glob", "fn:" + "sw-list", []byte(`{"name":"[x"}`), fleet.CodeBadRequest, ""},
		{"control API not JSON", fleet.CtlSubject(op.Opts.Nkey, fleet.OpMachinesAccept), []byte("garbage"), fleet.CodeBadRequest, "JSON"},
		{"control API unknown machine", fleet.CtlSubject(op.Opts.Nkey, fleet.OpMachinesAccept), []byte(`{"id":"1.2.3.4_ghost"}`), fleet.CodeNotFound, "not pending"},
		{"control API bad key", fleet.CtlSubject(op.Opts.Nkey, fleet.OpMachinesAdd), []byte(`{"id":"1.2.3.4_x","key":"nope"}`), fleet.CodeBadRequest, "not a public user nkey"},
		{"control API bad id", fleet.CtlSubject(op.Opts.Nkey, fleet.OpMachinesAdd), []byte(`{"id":"bad id!","key":"nope"}`), fleet.CodeBadRequest, "machine id"},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			var m *nats.Msg
			var err error
			if fn, ok := strings.CutPrefix(c.subject, "fn:"); ok {
				m, err = stacktest.Request(op, a.MachineID(), fn, c.body, 3*time.Second)
			} else {
				m, err = op.Request(c.subject, c.body, 3*time.Second)
			}
			if err != nil {
				t.Fatal(err)
			}
			e := fleet.ErrorFromHeader(m.Header.Get(fleet.HeaderErrorCode), m.Header.Get(fleet.HeaderError))
			if e == nil {
				t.Fatalf("got a success reply %q, want error %d", m.Data, c.code)
			}
			if e.Code != c.code || !strings.Contains(e.Description, c.desc) {
				t.Fatalf("got %d %q, want %d containing %q", e.Code, e.Description, c.code, c.desc)
			}
		})
	}
	// Both still answer.
	m, err := stacktest.Request(op, a.MachineID(), "echo", []byte(`{"msg":"ok"}`), 3*time.Second)
	if err != nil || m.Header.Get(fleet.HeaderErrorCode) != "" {
		t.Fatalf("agent unhealthy after bad input: %v %v", err, m.Header)
	}
	var who fleet.WhoAmI
	ctl(t, op, fleet.OpWhoAmI, nil, &who)
}

// TestMessageOverBrokerLimitRefused: a message over the broker's payload
// limit is refused by the broker itself, and the connection survives.
func TestMessageOverBrokerLimitRefused(t *testing.T) {
	svc := startControl(t, "")
	op := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	huge := make([]byte, op.MaxPayload()+1)
	if err := op.Publish(fleet.AllSubject("echo", op.Opts.Nkey), huge); err != nats.ErrMaxPayload {
		t.Fatalf("got %v, want %v", err, nats.ErrMaxPayload)
	}
	var who fleet.WhoAmI
	ctl(t, op, fleet.OpWhoAmI, nil, &who)
}
