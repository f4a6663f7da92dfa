package broker_test

import (
	"errors"
	"testing"

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
	fl := brokertest.Connect(t, b, keys.Fleet)
	fjs, _ := fl.JetStream()
	if _, err := fjs.AccountInfo(); !errors.Is(err, nats.ErrJetStreamNotEnabledForAccount) && !errors.Is(err, nats.ErrJetStreamNotEnabled) {
		t.Fatalf("FLEET account info: got %v, want JetStream not enabled", err)
	}
}

// TestNoJetStreamWithoutStoreDir: JetStream is off unless asked for.
func TestNoJetStreamWithoutStoreDir(t *testing.T) {
	b, _ := brokertest.Start(t)
	if b.Server().JetStreamEnabled() {
		t.Fatal("JetStream is on without a store directory")
	}
}
