package controlsvc

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/nats-io/nats.go"
)

// TestLateAuthorisedOlderConnectionThroughBroker is the reconnect storm's
// ordering on a real broker with the real callout: an agent's first
// attempt (X) waits in the callout, its next attempt (Y) is answered at
// once and connected, then X's answer comes. The broker sends X's connect
// event after Y's. Presence closes X, the older, and keeps the machine
// ONLINE through Y, which is never closed; before, the late event of X
// closed Y and kept X.
func TestLateAuthorisedOlderConnectionThroughBroker(t *testing.T) {
	b, bk := brokertest.Start(t, brokertest.WithAuthTimeout(8*time.Second), brokertest.WithConfig(func(c *broker.Config) {
		c.PingInterval = 10 * time.Second
	}))
	c, agentKP := brokerCallout(t, bk)
	agentPub, _ := agentKP.PublicKey()
	if err := c.init(); err != nil {
		t.Fatal(err)
	}
	// The callout: the first request waits until released, the others
	// are answered at once.
	held, release := make(chan *nats.Msg, 1), make(chan struct{})
	first := true
	ctl := brokertest.Connect(t, b, bk.Control)
	sub, err := ctl.Subscribe(AuthCalloutSubject, func(m *nats.Msg) {
		if first {
			first = false
			held <- m
			go func() {
				<-release
				c.handle(m, time.Time{})
			}()
			return
		}
		c.handle(m, time.Time{})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := ctl.Flush(); err != nil {
		t.Fatal(err)
	}

	rec := &recorder{}
	sys := brokertest.Connect(t, b, bk.Sys)
	tr := &presenceTracker{log: slog.New(slog.DiscardHandler), sys: sys, reg: c.reg}
	tr.leading.Store(true) // the one replica: it closes connections
	tr.state = newPresence(func(string) map[string]string { return nil }, rec.emit)
	stop, err := tr.watchEvents(context.Background(), sys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	if err := sys.Flush(); err != nil {
		t.Fatal(err)
	}

	dial := func(closed chan struct{}) (*nats.Conn, error) {
		return nats.Connect(b.ClientURL(), nats.Nkey(agentPub, agentKP.Sign), nats.Name("10.0.0.5_web01"),
			nats.Timeout(10*time.Second), nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	}
	xClosed, yClosed := make(chan struct{}), make(chan struct{})
	xConn := make(chan *nats.Conn, 1)
	go func() {
		nc, err := dial(xClosed)
		if err != nil {
			t.Errorf("first attempt refused: %v", err)
		}
		xConn <- nc
	}()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the first attempt's callout request never came")
	}
	y, err := dial(yClosed)
	if err != nil {
		t.Fatalf("second attempt refused: %v", err)
	}
	defer y.Close()
	waitFor(t, "the machine ONLINE through its second attempt", 10*time.Second, func() bool { return tr.state.online("10.0.0.5_web01") })
	close(release)
	x := <-xConn
	if x != nil {
		defer x.Close()
	}
	select {
	case <-xClosed:
	case <-yClosed:
		t.Fatal("the late connect event of the older attempt closed the newer, live connection")
	case <-time.After(10 * time.Second):
		t.Fatal("the older attempt, authorised late, was not closed")
	}
	yID, err := y.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "presence to hold the machine's newer connection only", 10*time.Second, func() bool {
		conns := tr.state.connsOf(agentUserPrefix + "10.0.0.5_web01")
		return len(conns) == 1 && conns[0].cid == yID
	})
	if !y.IsConnected() {
		t.Fatal("the newer connection was closed")
	}
	if !tr.state.online("10.0.0.5_web01") {
		t.Fatal("the machine is not ONLINE though its newer connection is up")
	}
	wantEvents(t, rec, "joined 10.0.0.5_web01")
}
