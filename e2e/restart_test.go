package e2e

import (
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// startExternal starts a stand-alone broker configured from the control
// service's data directory, as cc-broker does.
func startExternal(t *testing.T, dataDir string) *broker.Broker {
	t.Helper()
	// The broker's default number of unanswered pings, not brokerAt's 2.
	return brokerAt(t, dataDir, "127.0.0.1:0", func(c *broker.Config) { c.MaxPingsOut = 0 })
}

func startControlOn(t *testing.T, dataDir, url string) *controlsvc.Service {
	t.Helper()
	return stacktest.StartControlWith(t, controlsvc.Config{DataDir: dataDir, BrokerURL: url, Audit: controlsvc.AuditConfig{NotDurable: true}, ResyncInterval: 5 * time.Second, Logger: stacktest.Logger()})
}

// TestControlServiceRestart: the registry survives, presence is rebuilt
// from the broker's CONNZ without the agents reconnecting, and while the
// control service is down new connections are refused (fail closed) but
// established ones keep working.
func TestControlServiceRestart(t *testing.T) {
	data := t.TempDir()
	b := startExternal(t, data)
	svc := startControlOn(t, data, b.ClientURL())
	a1 := startAgent(t, svc, "10.0.0.1_web01", true, echoFn())
	a2 := startAgent(t, svc, "10.0.0.2_web02", true, echoFn())
	stacktest.WaitFor(t, "agents online", 5*time.Second, func() bool { return stacktest.Online(svc, a1.MachineID()) && stacktest.Online(svc, a2.MachineID()) })
	op := operatorConn(t, b.ClientURL(), svc.AdminKeyPath())

	svc.Close()

	// Established connections still work while the control service is down.
	m, err := stacktest.Request(op, a1.MachineID(), "echo", []byte(`{"msg":"still here"}`), 3*time.Second)
	if err != nil {
		t.Fatalf("call with the control service down: %v", err)
	}
	if got := string(m.Data); got != `{"msg":"still here"}` {
		t.Fatalf("call with the control service down: got %q", got)
	}
	// New connections are refused: the callout fails closed.
	kp, _ := nkeys.CreateUser()
	if _, err := connectAs(b.ClientURL(), kp, "10.0.0.3_new"); !isAuthErr(err) {
		t.Fatalf("connection with the control service down: got %v, want refused", err)
	}

	svc2 := startControlOn(t, data, b.ClientURL())
	snap := svc2.Snapshot()
	if len(snap.Servers) != 2 || snap.Servers[0].Machine != a1.MachineID() || snap.Servers[1].Machine != a2.MachineID() {
		t.Fatalf("presence after restart: got %+v, want both agents", snap.Servers)
	}
	if snap.Servers[0].Labels["role"] != "test" {
		t.Fatalf("labels lost across restart: %+v", snap.Servers[0].Labels)
	}
	// The admin key registered on first start still works.
	op2 := operatorConn(t, b.ClientURL(), svc2.AdminKeyPath())
	var list fleet.MachineList
	ctl(t, op2, fleet.OpMachinesList, nil, &list)
	if len(list.Machines) != 2 || !list.Machines[0].Online {
		t.Fatalf("machines after restart: %+v", list.Machines)
	}
}

// TestDuplicateSessionDoesNotFlap: a second connection of the same machine
// (a reconnect racing the old socket, or two processes) closes the older
// one (newest wins, see TestDuplicateAgentNewestWins) and the machine
// neither joins twice nor leaves meanwhile.
func TestDuplicateSessionDoesNotFlap(t *testing.T) {
	svc := startControl(t, "")
	op := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	events := watchEvents(t, op)
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	const id = "10.0.0.7_dup"
	if _, err := svc.Registry().AddMachine(id, pub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	c1, err := connectAs(svc.ClientURL(), kp, id, nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	stacktest.WaitFor(t, "joined", 3*time.Second, func() bool { return events.has(fleet.EventJoined, id) })
	c2, err := connectAs(svc.ClientURL(), kp, id)
	if err != nil {
		t.Fatal(err)
	}
	stacktest.WaitFor(t, "the older connection closed", 5*time.Second, c1.IsClosed)
	stacktest.WaitFor(t, "one connection", 3*time.Second, func() bool {
		s := svc.Snapshot()
		return len(s.Servers) == 1 && s.Servers[0].Connections == 1
	})
	if events.count(fleet.EventJoined, id) != 1 || events.has(fleet.EventLeft, id) {
		t.Fatalf("machine flapped: %+v", events.evs)
	}
	c2.Close()
	stacktest.WaitFor(t, "left after the last connection", 3*time.Second, func() bool { return events.has(fleet.EventLeft, id) })
}
