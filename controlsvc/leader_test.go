package controlsvc

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestPresenceLeaseOneHolder: of the replicas trying the presence lease
// one holds it; one that stops renewing (killed) loses it to another once
// it expires, and learns so at its next try; one that gives it up hands it
// over at the other's next try; a replica restarted under the same name
// takes its lease back at once. A replica asking for another lease
// length uses the bucket's, and says so.
func TestPresenceLeaseOneHolder(t *testing.T) {
	b, keys := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) { c.StoreDir = t.TempDir() }))
	js, err := jetstream.New(brokertest.Connect(t, b, keys.Control))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var logs strings.Builder
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{w: &logs, mu: &logMu}, nil))
	open := func(name string, ttl time.Duration) (*presenceLease, *[]bool) {
		l, err := openLease(ctx, log, js, name, ttl)
		if err != nil {
			t.Fatal(err)
		}
		var changes []bool
		l.set = func(on bool) { changes = append(changes, on) }
		return l, &changes
	}
	const lease = time.Second
	a, aSet := open("a", lease)
	bl, bSet := open("b", 3*lease)
	if bl.ttl != lease {
		t.Fatalf("second replica's lease: %v, want the bucket's %v", bl.ttl, lease)
	}
	logMu.Lock()
	if !strings.Contains(logs.String(), "another lease") {
		t.Errorf("the log does not say the lease differs:\n%s", logs.String())
	}
	logMu.Unlock()
	if !a.try(ctx) || bl.try(ctx) || !a.try(ctx) || bl.try(ctx) {
		t.Fatalf("a holds %v, b holds %v: want a alone", a.leading(), bl.leading())
	}
	// a dies: it renews no more. b takes over once the entry expires.
	waitFor(t, "b to take the lease a stopped renewing", 10*time.Second, func() bool { return bl.try(ctx) })
	if a.try(ctx) {
		t.Fatal("a still holds the lease after b took it")
	}
	if got := *aSet; len(got) != 2 || !got[0] || got[1] {
		t.Errorf("a was told %v, want [true false]", got)
	}
	// b gives it up: a takes it at its next try.
	bl.release()
	if !a.try(ctx) {
		t.Fatal("a did not take the lease b gave up")
	}
	if got := *bSet; len(got) != 2 || !got[0] || got[1] {
		t.Errorf("b was told %v, want [true false]", got)
	}
	// a restarts under its name: the new a takes the lease back at once,
	// the old one (if it were still there) loses it at its next try.
	a2, _ := open("a", lease)
	if !a2.try(ctx) {
		t.Fatal("a replica restarted under its name did not take its lease back")
	}
	if a.try(ctx) {
		t.Fatal("the old a still holds the lease the restarted one took")
	}
}

// TestLeaderLeaseTooShortRefused: a lease shorter than a few round trips
// would flap between replicas; New refuses it, saying what to give.
func TestLeaderLeaseTooShortRefused(t *testing.T) {
	_, err := New(Config{DataDir: t.TempDir(), LeaderLease: 100 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "leader lease 100ms is too short") || !strings.Contains(err.Error(), "at least 500ms") {
		t.Fatalf("New with a 100ms lease: %v; want it refused, naming the least", err)
	}
	svc, err := New(Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if svc.cfg.LeaderLease != DefaultLeaderLease || svc.cfg.ReplicaName == "" {
		t.Errorf("defaults: lease %v, replica %q; want %v and a name", svc.cfg.LeaderLease, svc.cfg.ReplicaName, DefaultLeaderLease)
	}
}
