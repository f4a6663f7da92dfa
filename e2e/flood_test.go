package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// stallDialer dials a real TCP connection whose reading stops, for good,
// once stall is called: the client then never reads what the broker sends
// it, as a reader that is wedged (or an attacker) would.
type stallDialer struct {
	once    sync.Once
	stopped chan struct{}
}

func newStallDialer() *stallDialer { return &stallDialer{stopped: make(chan struct{})} }

func (d *stallDialer) stall() { d.once.Do(func() { close(d.stopped) }) }

func (d *stallDialer) Dial(network, address string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).Dial(network, address)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096) // fill up quickly once stalled
	}
	return &stallConn{Conn: c, d: d, closed: make(chan struct{})}, nil
}

type stallConn struct {
	net.Conn
	d         *stallDialer
	closeOnce sync.Once
	closed    chan struct{}
}

// Read reads until the dialer stalls, then waits for the connection to
// be closed without reading another byte.
func (c *stallConn) Read(p []byte) (int, error) {
	select {
	case <-c.d.stopped:
		<-c.closed
		return 0, net.ErrClosed
	default:
		return c.Conn.Read(p)
	}
}

func (c *stallConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// labelled gives machine i n labels of size bytes each, so a snapshot of
// a small fleet weighs what one of a larger fleet does.
func labelled(i, n, size int) map[string]string {
	l := map[string]string{"role": "flood"}
	for j := range n {
		l[fmt.Sprintf("note%d", j)] = strings.Repeat(string(rune('a'+j%26)), size) + fmt.Sprint(i)
	}
	return l
}

// TestSnapshotSlowReaderDelaysNoOne reproduces finding 5's second half: a
// viewer subscribes to its control inbox on a connection that then never
// reads, and floods snapshot requests, answered into that inbox, from a
// second connection. The admin's snapshots keep answering within their
// normal timeout meanwhile, and the broker never stalls the control
// service's connection for the wedged reader (nats-server's fast-producer
// stall paused it up to 10 ms a read, with every operator's answers
// queued behind). The snapshot limit is off here: the limit only makes
// the flood smaller.
func TestSnapshotSlowReaderDelaysNoOne(t *testing.T) {
	svc := stacktest.StartControlWith(t, controlsvc.Config{
		DataDir:      t.TempDir(),
		Broker:       broker.Config{Listen: "127.0.0.1:0", PingInterval: stacktest.PingInterval, MaxPingsOut: stacktest.MaxPingsOut},
		Logger:       stacktest.Logger().With("side", "control"),
		SnapshotRate: -1,
	})
	for i := range 8 {
		// 8 machines of about 3 KiB each: 20,000 snapshots are about
		// 500 MB, far past what the broker holds for one client (64 MiB).
		stacktest.StartAgent(t, svc, fmt.Sprintf("10.0.0.%d_flood%d", i+1, i), labelled(i, 16, 200))
	}
	viewerKP := stacktest.Key(t, "viewer:flood")
	stacktest.AddOperator(t, svc, "flooder", fleet.RoleViewer, viewerKP)
	viewer := stacktest.Pub(t, viewerKP)

	d := newStallDialer()
	sink := stacktest.Connect(t, svc.ClientURL(), viewerKP, "flood-sink", nats.SetCustomDialer(d))
	sinkSubject := fleet.ControlInbox(viewer) + ".sink"
	if _, err := sink.Subscribe(sinkSubject, func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := sink.Flush(); err != nil {
		t.Fatal(err)
	}
	d.stall()

	flooder := stacktest.Connect(t, svc.ClientURL(), viewerKP, "flooder")
	admin, err := bench.Connect(svc.ClientURL(), bench.WithSeed(stacktest.AdminSeed(t, svc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	sent := 0
	go func() {
		defer wg.Done()
		// Both snapshot subjects: the viewer's own (answered on its own
		// connection) and the unattributed one (on the shared one).
		subjects := []string{fleet.CtlSubject(viewer, fleet.OpPresenceSnapshot), fleet.PresenceSnapshotSubject}
		for ; sent < 20000 && ctx.Err() == nil; sent++ {
			if err := flooder.PublishRequest(subjects[sent%2], sinkSubject, nil); err != nil {
				return
			}
		}
		_ = flooder.Flush()
	}()
	var worst time.Duration
	for i := range 30 {
		start := time.Now()
		snap, err := admin.Snapshot(t.Context())
		if took := time.Since(start); took > worst {
			worst = took
		}
		if err != nil {
			cancel()
			wg.Wait()
			t.Fatalf("admin snapshot %d while a viewer floods a reader that never reads (%d requests sent): %v", i, sent, err)
		}
		if len(snap.Servers) != 8 {
			t.Fatalf("admin snapshot %d lists %d machines, want 8", i, len(snap.Servers))
		}
	}
	cancel()
	wg.Wait()
	v, _ := svc.Broker().Server().Varz(nil)
	t.Logf("admin snapshots answered; slowest %v; flood requests sent %d; broker: %d producer stalls, %d slow consumers",
		worst, sent, v.StalledClients, v.SlowConsumers)
	// The mechanism, not only its effect: the broker never paused a
	// publisher (the control service) for the reader that does not read.
	if v.StalledClients != 0 {
		t.Fatalf("the broker stalled publishers %d times for a client that does not read", v.StalledClients)
	}
}

// startLimitedControl starts a control service whose operators may ask
// for burst snapshots and burst control requests; the rate refills one
// token in a thousand seconds, so within a test the burst is all there is.
func startLimitedControl(t *testing.T, burst int) *controlsvc.Service {
	t.Helper()
	return stacktest.StartControlWith(t, controlsvc.Config{
		DataDir: t.TempDir(),
		Broker:  broker.Config{Listen: "127.0.0.1:0", PingInterval: stacktest.PingInterval, MaxPingsOut: stacktest.MaxPingsOut},
		Logger:  stacktest.Logger().With("side", "control"),
		// One token in a thousand seconds: within a test the burst is
		// all an operator has, whatever the clock says.
		SnapshotRate: 0.001, SnapshotBurst: burst,
		ControlRate: 0.001, ControlBurst: burst,
	})
}

// code429 reports whether err is the control service's 429, naming the
// flag that sets the limit.
func code429(t *testing.T, err error, flag string) bool {
	t.Helper()
	var fe *fleet.Error
	if !errors.As(err, &fe) {
		return false
	}
	if fe.Code != fleet.CodeTooManyRequests || !strings.Contains(fe.Description, flag) {
		t.Fatalf("refusal %v: want code 429 naming %s", fe, flag)
	}
	return true
}

// TestSnapshotFloodRefusedForViewer: a real viewer client asking for
// snapshots and control requests in a loop gets its burst, then a 429
// naming the limit (a burst of refusals is answered; past those a flood
// is dropped unanswered, see TestOperatorLimitTokenBucket); the admin,
// asking meanwhile, is answered every time: the limit is per operator.
// The unattributed snapshot subject is limited the same way, by one
// bucket all its senders share (see TestThreatLegacySnapshotSharedBucket).
func TestSnapshotFloodRefusedForViewer(t *testing.T) {
	const burst, asks = 5, 10
	svc := startLimitedControl(t, burst)
	for i := range 2 {
		stacktest.StartAgent(t, svc, fmt.Sprintf("10.0.1.%d_lim%d", i+1, i), nil)
	}
	viewerKP := stacktest.Key(t, "viewer:limited")
	viewer, err := bench.Connect(svc.ClientURL(), bench.WithSeed(stacktest.AddOperator(t, svc, "flooder", fleet.RoleViewer, viewerKP)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(viewer.Close)
	admin, err := bench.Connect(svc.ClientURL(), bench.WithSeed(stacktest.AdminSeed(t, svc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)

	count := func(what, flag string, ask func() error) {
		t.Helper()
		ok, refused := 0, 0
		for range asks {
			switch err := ask(); {
			case err == nil:
				ok++
			case code429(t, err, flag):
				refused++
			default:
				t.Fatalf("%s: %v", what, err)
			}
		}
		if ok != burst || refused != asks-burst {
			t.Fatalf("%s: %d answered, %d refused 429; want %d and %d", what, ok, refused, burst, asks-burst)
		}
		t.Logf("%s: %d answered, %d refused 429", what, ok, refused)
	}
	count("viewer snapshots", "--snapshot-rate", func() error {
		_, err := viewer.Snapshot(t.Context())
		return err
	})
	if snap, err := admin.Snapshot(t.Context()); err != nil || len(snap.Servers) != 2 {
		t.Fatalf("admin snapshot after the viewer's flood: %v (%v)", err, snap)
	}
	count("viewer control requests", "--control-rate", func() error {
		_, err := viewer.WhoAmI(t.Context())
		return err
	})
	if _, err := admin.WhoAmI(t.Context()); err != nil {
		t.Fatalf("admin whoami after the viewer's flood: %v", err)
	}
	// Hand-made requests on the unattributed subject (`nats req`), each
	// answered into the viewer's own control inbox.
	raw := stacktest.Connect(t, svc.ClientURL(), viewerKP, "flooder-raw")
	count("viewer snapshots on "+fleet.PresenceSnapshotSubject, "--snapshot-rate", func() error {
		m, err := raw.Request(fleet.PresenceSnapshotSubject, nil, stacktest.WaitTimeout)
		if err != nil {
			return err
		}
		if fe := fleet.ErrorFromHeader(m.Header.Get(fleet.HeaderErrorCode), m.Header.Get(fleet.HeaderError)); fe != nil {
			return fe
		}
		return nil
	})
	if _, err := admin.Snapshot(t.Context()); err != nil {
		t.Fatalf("admin snapshot after the viewer's flood: %v", err)
	}
}

// TestSrvPingViewerNoFanOut reproduces finding 5's first half: every agent
// answers micro discovery, so one $SRV.PING from a viewer came back once
// per machine. A viewer may no longer publish $SRV at all: the broker
// refuses each, and no machine answers. An admin keeps discovery (`nats
// micro ls`), one reply per agent and one from cc-control.
func TestSrvPingViewerNoFanOut(t *testing.T) {
	svc := stacktest.StartControl(t)
	const agents = 3
	for i := range agents {
		stacktest.StartAgent(t, svc, fmt.Sprintf("10.0.2.%d_ping%d", i+1, i), nil)
	}
	asks := []string{"$SRV.PING", "$SRV.PING." + fleet.AgentServiceName, "$SRV.INFO", "$SRV.STATS." + fleet.AgentServiceName}

	viewerKP := stacktest.Key(t, "viewer:pinger")
	stacktest.AddOperator(t, svc, "pinger", fleet.RoleViewer, viewerKP)
	denied := make(chan string, 100)
	viewer := stacktest.Connect(t, svc.ClientURL(), viewerKP, "pinger", nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			denied <- err.Error()
		}
	}))
	var answers atomic.Int64
	inbox := fleet.DiscoveryInbox(stacktest.Pub(t, viewerKP))
	if _, err := viewer.Subscribe(inbox+".>", func(*nats.Msg) { answers.Add(1) }); err != nil {
		t.Fatal(err)
	}
	for i, subj := range asks {
		if err := viewer.PublishRequest(subj, fmt.Sprintf("%s.%d", inbox, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, subj := range asks {
		select {
		case e := <-denied:
			if !strings.Contains(e, "$SRV.") {
				t.Fatalf("permission error %q does not name a $SRV subject", e)
			}
		case <-time.After(stacktest.WaitTimeout):
			t.Fatalf("the broker let a viewer publish %s (no permission error); %d discovery answers so far", subj, answers.Load())
		}
	}
	// The broker refused each before delivering it: no answer is coming.
	if err := viewer.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := answers.Load(); n != 0 {
		t.Fatalf("a viewer's discovery was answered %d times", n)
	}

	akp, err := nkeys.FromSeed(stacktest.AdminSeed(t, svc))
	if err != nil {
		t.Fatal(err)
	}
	admin := stacktest.Connect(t, svc.ClientURL(), akp, "admin-pinger")
	var adminAnswers atomic.Int64
	ainbox := fleet.DiscoveryInbox(stacktest.Pub(t, akp))
	if _, err := admin.Subscribe(ainbox+".>", func(*nats.Msg) { adminAnswers.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := admin.PublishRequest("$SRV.PING."+fleet.AgentServiceName, ainbox+".1", nil); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitFor(t, "every agent to answer the admin's discovery", stacktest.WaitTimeout, func() bool { return adminAnswers.Load() == agents })
}

// TestLimitedSDKWaitsItsTurn: past its limit an SDK client is told when
// to retry, and waits that long and asks again when its context leaves
// room: a script or a paged listing is slowed to the limit, not failed.
func TestLimitedSDKWaitsItsTurn(t *testing.T) {
	svc := stacktest.StartControlWith(t, controlsvc.Config{
		DataDir: t.TempDir(),
		Broker:  broker.Config{Listen: "127.0.0.1:0", PingInterval: stacktest.PingInterval, MaxPingsOut: stacktest.MaxPingsOut},
		Logger:  stacktest.Logger().With("side", "control"),
		// Two at once, then one every 50 ms.
		SnapshotRate: 20, SnapshotBurst: 2,
		ControlRate: 20, ControlBurst: 2,
	})
	stacktest.StartAgent(t, svc, "10.0.3.1_wait", nil)
	viewer, err := bench.Connect(svc.ClientURL(), bench.WithSeed(stacktest.OperatorSeed(t, svc, "patient", fleet.RoleViewer)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(viewer.Close)
	for i := range 8 {
		if snap, err := viewer.Snapshot(t.Context()); err != nil || len(snap.Servers) != 1 {
			t.Fatalf("snapshot %d: %v", i+1, err)
		}
		if _, err := viewer.WhoAmI(t.Context()); err != nil {
			t.Fatalf("whoami %d: %v", i+1, err)
		}
	}
}
