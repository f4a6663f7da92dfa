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
// takes its lease back only once the old one's entry is gone (the old
// one may be alive: the new one cannot tell). A replica asking for
// another lease length uses the bucket's, and says so.
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
		l, err := openLease(ctx, log, js, name, newInstanceID(), ttl)
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
	// a restarts under its name: a new instance, which waits for the
	// old one's entry to expire (the old one stopped renewing) and then
	// takes it; the old one learns so at its next try.
	a2, _ := open("a", lease)
	if a2.try(ctx) {
		t.Fatal("a new instance of a took the lease the old one's entry still held")
	}
	waitFor(t, "a's new instance to take the lease once the old entry expired", 10*time.Second, func() bool { return a2.try(ctx) })
	if a.try(ctx) {
		t.Fatal("the old a still holds the lease the restarted one took")
	}
}

// TestPresenceLeaseSameNameTwoInstances: two live replicas given one
// name take the lease from each other no more: the second waits while
// the first renews, says so once in an ERROR naming the fix, and takes
// over only when the first gives the lease up.
func TestPresenceLeaseSameNameTwoInstances(t *testing.T) {
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
	open := func() *presenceLease {
		l, err := openLease(ctx, log, js, "ctl", newInstanceID(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	first, second := open(), open()
	if !first.try(ctx) {
		t.Fatal("the first replica did not take the free lease")
	}
	for i := range 5 {
		if second.try(ctx) {
			t.Fatalf("try %d: the second live replica of the name took the lease from the first", i)
		}
		if !first.try(ctx) {
			t.Fatalf("try %d: the first replica lost the lease it renews", i)
		}
	}
	logMu.Lock()
	text := logs.String()
	logMu.Unlock()
	if n := strings.Count(text, "another live replica holds the presence lease under this replica's name"); n != 1 ||
		!strings.Contains(text, "level=ERROR") || !strings.Contains(text, "--replica-name") {
		t.Errorf("the log says the name is shared %d times (want once, an ERROR naming --replica-name):\n%s", n, text)
	}
	first.release()
	if !second.try(ctx) {
		t.Fatal("the second replica did not take the lease the first gave up")
	}
}

// TestPresenceLeasePausedHolderStops: a holder stops publishing once 3/4
// of the lease passed since its last renewal, before its next try runs
// (a paused process wakes and would publish first); that try gives the
// lease up and the next takes it back (its own entry) under a new
// epoch. The clock is the lease's, moved by the test.
func TestPresenceLeasePausedHolderStops(t *testing.T) {
	b, keys := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) { c.StoreDir = t.TempDir() }))
	js, err := jetstream.New(brokertest.Connect(t, b, keys.Control))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A long lease: the entry outlives the test; only the lease's
	// own clock moves.
	l, err := openLease(ctx, slog.New(slog.DiscardHandler), js, "ctl", newInstanceID(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	clock := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	l.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	tr := &presenceTracker{state: &presence{}}
	tr.lease.Store(l)
	l.set = tr.setLeading
	if !l.try(ctx) || !tr.publishing() {
		t.Fatalf("holding %v, publishing %v: want both", l.leading(), tr.publishing())
	}
	epoch := tr.state.epoch
	advance(time.Hour/2 + time.Minute) // a pause: no try ran
	if !tr.publishing() {
		t.Fatal("not publishing half a lease after the renewal: want publishing until 3/4")
	}
	advance(time.Hour / 4)
	if tr.publishing() {
		t.Fatal("still publishing 3/4 of the lease after the last renewal, before any try: a paused holder publishes on waking")
	}
	if l.try(ctx) || tr.leading.Load() {
		t.Fatal("the late try kept the lease: want it given up")
	}
	if !l.try(ctx) || !tr.publishing() {
		t.Fatal("the next try did not take back this replica's own entry")
	}
	if tr.state.epoch == epoch {
		t.Error("publishing again under the same epoch: watchers would not see what was not published meanwhile")
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
