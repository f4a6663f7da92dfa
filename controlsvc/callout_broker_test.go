package controlsvc

import (
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// brokerCallout is a callout for the brokertest broker's keys with a
// registry holding machine 10.0.0.5_web01, whose key it returns.
func brokerCallout(t *testing.T, bk *brokertest.Keys) (*callout, nkeys.KeyPair) {
	t.Helper()
	reg, err := OpenRegistry(filepath.Join(t.TempDir(), RegistryFile))
	if err != nil {
		t.Fatal(err)
	}
	agentKP, agentPub := newUser(t)
	if _, err := reg.AddMachine("10.0.0.5_web01", agentPub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	return &callout{
		keys:     &Keys{Issuer: bk.Issuer, XKey: bk.XKey, Sys: bk.Sys, Control: bk.Control, Fleet: bk.Fleet},
		reg:      reg,
		log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		ttl:      time.Hour,
		readOnly: DefaultReadOnlyFunctions,
	}, agentKP
}

// TestCalloutThroughBroker runs the callout responder (handle: xkey
// decryption, JWT issue, encryption) against a real broker from
// brokertest, without the rest of the service.
func TestCalloutThroughBroker(t *testing.T) {
	b, bk := brokertest.Start(t, brokertest.WithAuthTimeout(2*time.Second))
	c, agentKP := brokerCallout(t, bk)
	opKP, opPub := newUser(t)
	if _, err := c.reg.AddOperator("alice", opPub, fleet.RoleViewer); err != nil {
		t.Fatal(err)
	}
	ctl := brokertest.Connect(t, b, bk.Control)
	_, stop, err := c.subscribe(ctl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	if err := ctl.Flush(); err != nil {
		t.Fatal(err)
	}

	connect := func(kp nkeys.KeyPair, name string) (*nats.Conn, error) {
		pub, _ := kp.PublicKey()
		return nats.Connect(b.ClientURL(), nats.Nkey(pub, kp.Sign), nats.Name(name),
			nats.CustomInboxPrefix(fleet.OperatorInbox(pub)), nats.Timeout(5*time.Second), nats.NoReconnect())
	}

	op, err := connect(opKP, "cc-bench")
	if err != nil {
		t.Fatalf("operator refused: %v", err)
	}
	defer op.Close()
	ag, err := connect(agentKP, "10.0.0.5_web01")
	if err != nil {
		t.Fatalf("agent refused: %v", err)
	}
	defer ag.Close()

	// The viewer may call a read-only function on the agent, and the agent
	// may answer; it may not call a write function.
	sub, err := ag.Subscribe(fleet.FnSubject("10.0.0.5_web01", "machine-info", opPub), func(m *nats.Msg) { _ = m.Respond([]byte(`{"ok":true}`)) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := ag.Flush(); err != nil {
		t.Fatal(err)
	}
	reply := fleet.CallReply(opPub, fleet.MachineToken("10.0.0.5_web01"), "c1", 0)
	replies, err := op.SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	if err := op.PublishRequest(fleet.FnSubject("10.0.0.5_web01", "machine-info", opPub), reply, nil); err != nil {
		t.Fatal(err)
	}
	m, err := replies.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("viewer call: %v", err)
	}
	if got, want := string(m.Data), `{"ok":true}`; got != want {
		t.Fatalf("reply: got %q, want %q", got, want)
	}
	errs := make(chan error, 4)
	op.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err })
	if err := op.Publish(fleet.FnSubject("10.0.0.5_web01", "reboot", opPub), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("got %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a viewer published a non-read-only call without a permissions violation")
	}

	strangerKP, _ := newUser(t)
	if nc, err := connect(strangerKP, "10.0.0.9_new"); err == nil {
		nc.Close()
		t.Fatal("an unknown machine connected")
	}
	if p := c.reg.Pending(); len(p) != 1 || p[0].ID != "10.0.0.9_new" {
		t.Fatalf("pending: got %+v, want 10.0.0.9_new", p)
	}
}

// TestSlowCalloutStillAdmits: a callout answered after 3 s (a loaded
// control service) still admits the client when the auth timeout allows
// it. nats-server pings a new client 2 s after CONNECT unless told not to,
// and a client still in its handshake takes that PING for an error and
// drops the connection the broker is about to admit.
func TestSlowCalloutStillAdmits(t *testing.T) {
	b, bk := brokertest.Start(t, brokertest.WithAuthTimeout(6*time.Second), brokertest.WithConfig(func(c *broker.Config) {
		c.PingInterval = 10 * time.Second
	}))
	c, agentKP := brokerCallout(t, bk)
	agentPub, _ := agentKP.PublicKey()
	if err := c.init(); err != nil {
		t.Fatal(err)
	}
	ctl := brokertest.Connect(t, b, bk.Control)
	sub, err := ctl.Subscribe(AuthCalloutSubject, func(m *nats.Msg) {
		time.Sleep(3 * time.Second)
		c.handle(m, time.Time{})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := ctl.Flush(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	nc, err := nats.Connect(b.ClientURL(), nats.Nkey(agentPub, agentKP.Sign), nats.Name("10.0.0.5_web01"),
		nats.Timeout(10*time.Second), nats.NoReconnect())
	if err != nil {
		t.Fatalf("refused after %s: %v", time.Since(start).Round(time.Millisecond), err)
	}
	nc.Close()
}
