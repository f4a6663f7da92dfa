package e2e

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
)

// eventLog collects presence events seen by an operator connection.
type eventLog struct {
	mu  sync.Mutex
	evs []fleet.PresenceEvent
}

func watchEvents(t *testing.T, nc *nats.Conn) *eventLog {
	t.Helper()
	l := &eventLog{}
	_, err := nc.Subscribe(fleet.PresenceEventsWildcard, func(m *nats.Msg) {
		var ev fleet.PresenceEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Errorf("bad presence event %q: %v", m.Data, err)
			return
		}
		l.mu.Lock()
		l.evs = append(l.evs, ev)
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *eventLog) has(event, machine string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.evs {
		if e.Event == event && e.Machine == machine {
			return true
		}
	}
	return false
}

func (l *eventLog) count(event, machine string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.evs {
		if e.Event == event && e.Machine == machine {
			n++
		}
	}
	return n
}

func (l *eventLog) total(event string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.evs {
		if e.Event == event {
			n++
		}
	}
	return n
}

// online reports the machines the watcher holds ONLINE: present or
// joined, minus left, in order.
func (l *eventLog) online() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	on := map[string]bool{}
	for _, e := range l.evs {
		switch e.Event {
		case bench.EventPresent, fleet.EventJoined:
			on[e.Machine] = true
		case fleet.EventLeft:
			delete(on, e.Machine)
		}
	}
	return on
}

func TestAdmissionPresenceAndRevocation(t *testing.T) {
	svc := startControl(t, "")
	op := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	events := watchEvents(t, op)

	a1 := startAgent(t, svc, "10.0.0.1_web01", true)
	a2 := startAgent(t, svc, "10.0.0.2_web02", true)
	a3 := startAgent(t, svc, "10.0.0.3_db01", false)
	stacktest.WaitFor(t, "two accepted agents joined", 5*time.Second, func() bool {
		return events.has(fleet.EventJoined, a1.MachineID()) && events.has(fleet.EventJoined, a2.MachineID())
	})

	// The unregistered third machine is refused and recorded as pending
	// with the key it presented.
	var pend fleet.PendingList
	stacktest.WaitFor(t, "third machine pending", 5*time.Second, func() bool {
		pend = fleet.PendingList{}
		ctl(t, op, fleet.OpMachinesPending, nil, &pend)
		return len(pend.Pending) == 1
	})
	if got, want := pend.Pending[0].ID, a3.MachineID(); got != want {
		t.Fatalf("pending id: got %q, want %q", got, want)
	}
	if got, want := pend.Pending[0].Key, a3.PublicKey(); got != want {
		t.Fatalf("pending key: got %q, want %q", got, want)
	}
	if stacktest.Online(svc, a3.MachineID()) {
		t.Fatal("unregistered machine is ONLINE")
	}

	// Accepting it lets the retrying agent in without a restart.
	var m fleet.Machine
	ctl(t, op, fleet.OpMachinesAccept, fleet.MachineRequest{ID: a3.MachineID()}, &m)
	stacktest.WaitFor(t, "accepted machine joined", 5*time.Second, func() bool { return events.has(fleet.EventJoined, a3.MachineID()) })

	// A stopped agent leaves.
	a2.Close()
	stacktest.WaitFor(t, "stopped agent left", 3*time.Second, func() bool { return events.has(fleet.EventLeft, a2.MachineID()) })

	// A removed machine's live connection is closed within a second.
	var rm fleet.RemoveResult
	start := time.Now()
	ctl(t, op, fleet.OpMachinesRemove, fleet.MachineRequest{ID: a1.MachineID()}, &rm)
	if rm.Closed != 1 {
		t.Fatalf("removal closed %d connections, want 1", rm.Closed)
	}
	stacktest.WaitFor(t, "removed machine left", time.Second, func() bool { return events.has(fleet.EventLeft, a1.MachineID()) })
	t.Logf("removed machine left after %s", time.Since(start))
	// ... and stays out: it retries but is refused (its key, unknown
	// now, is listed as pending).
	stacktest.WaitFor(t, "the removed machine's retry refused and pending", 5*time.Second, func() bool {
		for _, p := range svc.Registry().Pending() {
			if p.ID == a1.MachineID() && p.Key == a1.PublicKey() {
				return true
			}
		}
		return false
	})
	if stacktest.Online(svc, a1.MachineID()) {
		t.Fatal("removed machine came back ONLINE")
	}
	if n := events.count(fleet.EventJoined, a3.MachineID()); n != 1 {
		t.Fatalf("machine joined %d times, want 1 (no flapping)", n)
	}
}

// ctl calls a control API operation as the operator on nc and decodes the
// reply into out, failing the test on an error reply.
func ctl(t *testing.T, nc *nats.Conn, op string, req, out any) {
	t.Helper()
	if err := ctlErr(nc, op, req, out); err != nil {
		t.Fatalf("%s: %v", op, err)
	}
}

func ctlErr(nc *nats.Conn, op string, req, out any) error {
	var body []byte
	if req != nil {
		body, _ = json.Marshal(req)
	}
	m, err := nc.Request(fleet.CtlSubject(nc.Opts.Nkey, op), body, 3*time.Second)
	if err != nil {
		return err
	}
	if e := fleet.ErrorFromHeader(m.Header.Get(fleet.HeaderErrorCode), m.Header.Get(fleet.HeaderError)); e != nil {
		return e
	}
	if out != nil {
		return json.Unmarshal(m.Data, out)
	}
	return nil
}
