package e2e

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestPendingKeySwapRefused: an attacker with no credentials keeps trying
// a new machine's id with a key of its own while the real host tries too.
// Before, a pending entry held only the latest key and accept bound
// whichever key had tried last: the attacker's, 3 runs in 3. Now pending
// shows both keys and flags the id, accept without --pubkey is refused,
// accept with the reviewed key's prefix binds that key: the host comes
// ONLINE and the attacker stays refused.
func TestPendingKeySwapRefused(t *testing.T) {
	svc := startControl(t, "")
	url := svc.ClientURL()
	const id = "10.0.0.5_web01"
	admin := adminClient(t, svc)

	host := startUnregisteredAgent(t, url, id)
	hostPub := host.PublicKey()
	thief, _ := nkeys.CreateUser()
	thiefPub, _ := thief.PublicKey()
	stop := retryConnect(t, url, thief, id)
	defer stop()

	var p fleet.Pending
	stacktest.WaitFor(t, "both keys pending", 10*time.Second, func() bool {
		ps, err := admin.PendingMachines(testCtx(t))
		if err != nil || len(ps) != 1 {
			return false
		}
		p = ps[0]
		return len(p.Keys) == 2
	})
	if !p.MultipleKeys || !pendingHas(p, hostPub) || !pendingHas(p, thiefPub) {
		t.Fatalf("pending: got %+v; want both keys and the id flagged", p)
	}

	_, err := admin.AcceptMachine(testCtx(t), id, "")
	if fe := (*fleet.Error)(nil); !errors.As(err, &fe) || fe.Code != fleet.CodeConflict ||
		!strings.Contains(fe.Description, hostPub) || !strings.Contains(fe.Description, thiefPub) ||
		!strings.Contains(fe.Description, "cc-bench machines accept "+id+" --pubkey KEY") {
		t.Fatalf("accept without --pubkey: got %v; want 409 listing both keys and the command", err)
	}
	if _, ok := svc.Registry().Machine(id); ok {
		t.Fatal("a refused accept registered the machine")
	}
	_, err = admin.AcceptMachine(testCtx(t), id, "U")
	if fe := (*fleet.Error)(nil); !errors.As(err, &fe) || fe.Code != fleet.CodeBadRequest || !strings.Contains(fe.Description, "give more of the key") {
		t.Fatalf("accept with an ambiguous prefix: got %v; want 400", err)
	}

	m, err := admin.AcceptMachine(testCtx(t), id, hostPub[:12])
	if err != nil || m == nil || m.Key != hostPub || m.ReplacedKey != "" {
		t.Fatalf("accept --pubkey %s: got %+v, %v; want the host's key %s", hostPub[:12], m, err, hostPub)
	}
	stop()
	stacktest.WaitFor(t, "the host ONLINE", 10*time.Second, func() bool { return stacktest.Online(svc, id) })
	if nc, err := connectAs(url, thief, id); !isAuthErr(err) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("attacker after accept: got %v; want an authorization violation", err)
	}
}

// TestRekeyClosesOldKeyConnections: replacing a registered machine's key
// (accept of the key a rebuilt host presents) says so in the reply and the
// audit, and closes every live connection made with the old key. Before,
// the old key's connections stayed up and kept answering calls.
func TestRekeyClosesOldKeyConnections(t *testing.T) {
	svc := startControl(t, "")
	url := svc.ClientURL()
	const id = "10.0.0.6_db01"
	admin := adminClient(t, svc)

	old, _ := nkeys.CreateUser()
	oldPub, _ := old.PublicKey()
	if _, err := svc.Registry().AddMachine(id, oldPub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	_, closed := connectOnline(t, svc, url, id, old)

	rebuilt, _ := nkeys.CreateUser()
	newPub, _ := rebuilt.PublicKey()
	if _, err := connectAs(url, rebuilt, id); !isAuthErr(err) {
		t.Fatalf("new key before accept: got %v; want refused", err)
	}
	start := time.Now().Add(-time.Minute)
	m, err := admin.AcceptMachine(testCtx(t), id, newPub)
	if err != nil || m == nil || m.Key != newPub || m.ReplacedKey != oldPub || m.Closed != 1 {
		t.Fatalf("re-key: got %+v, %v; want key %s replacing %s, 1 connection closed", m, err, newPub, oldPub)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the old key's connection is still open after its key was replaced")
	}
	if nc, err := connectAs(url, old, id); !isAuthErr(err) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("old key after re-key: got %v; want refused", err)
	}
	nc, err := connectAs(url, rebuilt, id)
	if err != nil {
		t.Fatalf("new key after re-key: %v", err)
	}
	nc.Close()

	stacktest.WaitFor(t, "the re-key in the audit", 10*time.Second, func() bool {
		recs, err := admin.Audit(testCtx(t), start, 0)
		if err != nil {
			return false
		}
		for _, r := range recs {
			if r.Op == fleet.OpMachinesAccept && strings.Contains(r.Note, "replaced key "+oldPub) {
				return true
			}
		}
		return false
	})
}

// TestRekeyByAddReplace: machines add over a registered id is refused with
// the --replace hint; with it, the key is replaced, the reply says so, and
// the old key's live connection is closed.
func TestRekeyByAddReplace(t *testing.T) {
	svc := startControl(t, "")
	url := svc.ClientURL()
	const id = "10.0.0.7_app01"
	admin := adminClient(t, svc)
	old, _ := nkeys.CreateUser()
	oldPub, _ := old.PublicKey()
	if _, err := admin.AddMachine(testCtx(t), id, oldPub, nil); err != nil {
		t.Fatal(err)
	}
	_, closed := connectOnline(t, svc, url, id, old)
	fresh, _ := nkeys.CreateUser()
	freshPub, _ := fresh.PublicKey()
	if _, err := admin.AddMachine(testCtx(t), id, freshPub, nil); err == nil || !strings.Contains(err.Error(), "--replace") {
		t.Fatalf("add over a registered id: got %v; want refused with the --replace hint", err)
	}
	m, err := admin.ReplaceMachine(testCtx(t), id, freshPub, nil)
	if err != nil || m == nil || m.ReplacedKey != oldPub || m.Closed != 1 {
		t.Fatalf("add --replace: got %+v, %v", m, err)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the old key's connection is still open after add --replace")
	}
}

func adminClient(t *testing.T, svc *controlsvc.Service) *bench.Client {
	t.Helper()
	c, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func pendingHas(p fleet.Pending, key string) bool {
	for _, k := range p.Keys {
		if k.Key == key {
			return true
		}
	}
	return false
}

// startUnregisteredAgent starts a real agent for id with a fresh key that
// is in no registry: it keeps retrying until accepted.
func startUnregisteredAgent(t *testing.T, url, id string) *agent.Agent {
	t.Helper()
	return startAgentWith(t, nil, agent.Config{URL: url, MachineID: id, MaxReconnectDelay: 100 * time.Millisecond}, false, nil)
}

// retryConnect tries id with kp over and over (as the attacker did, every
// 100 ms) until stop is called.
func retryConnect(t *testing.T, url string, kp nkeys.KeyPair, id string) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			if nc, err := connectAs(url, kp, id, nats.NoReconnect()); err == nil {
				nc.Close()
			}
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// connectOnline connects as machine id with kp, without reconnecting, and
// waits until it is ONLINE; closed is closed when the connection is.
func connectOnline(t *testing.T, svc *controlsvc.Service, url, id string, kp nkeys.KeyPair) (*nats.Conn, chan struct{}) {
	t.Helper()
	closed := make(chan struct{})
	nc, err := connectAs(url, kp, id, nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	stacktest.WaitFor(t, "the old key ONLINE", 10*time.Second, func() bool { return stacktest.Online(svc, id) })
	return nc, closed
}
