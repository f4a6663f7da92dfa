package broker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/nats-io/nats.go"
)

// TestJetStreamForControlAccountOnly: with a store directory the CONTROL
// account gets JetStream (the audit stream lives there); FLEET, where the
// agents and operators are, does not.
func TestJetStreamForControlAccountOnly(t *testing.T) {
	dir := t.TempDir()
	b, keys := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) { c.StoreDir = dir }))
	for acc, want := range map[string]bool{broker.ControlAccount: true, broker.FleetAccount: false} {
		a, err := b.Server().LookupAccount(acc)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.JetStreamEnabled(); got != want {
			t.Errorf("account %s: JetStream enabled %v, want %v", acc, got, want)
		}
	}
	ctl := brokertest.Connect(t, b, keys.Control)
	js, err := ctl.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(); err != nil {
		t.Fatalf("CONTROL account info: %v", err)
	}
	// The control service's own FLEET users may not even ask (they
	// publish only into inboxes, presence events and the hint).
	errs := make(chan error, 4)
	fl := brokertest.Connect(t, b, keys.Fleet, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err := fl.PublishRequest("$JS.API.INFO", "_INBOX_cc.x.y", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("FLEET user asking JetStream: got %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("FLEET user asked JetStream without a permissions violation")
	}
}

// TestNoJetStreamWithoutStoreDir: JetStream is off unless asked for.
func TestNoJetStreamWithoutStoreDir(t *testing.T) {
	b, _ := brokertest.Start(t)
	if b.Server().JetStreamEnabled() {
		t.Fatal("JetStream is on without a store directory")
	}
}
