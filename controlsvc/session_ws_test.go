package controlsvc

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Attacks on admission over the public WebSocket listener, through the
// real broker and the real callout.

// startWSSessionStack is startSessionStack whose broker also serves
// WebSocket on a free loopback port.
func startWSSessionStack(t *testing.T, mod func(*Config)) (*sessionStack, string) {
	t.Helper()
	st := startSessionStack(t, func(c *Config) {
		c.Broker.WebSocketListen = "127.0.0.1:0"
		if mod != nil {
			mod(c)
		}
	})
	return st, st.svc.Broker().WebSocketURL()
}

// wsConnect connects to url holding a fresh key under name.
func wsConnect(t *testing.T, url, name string) error {
	t.Helper()
	kp, pub := newKP(t)
	nc, err := nats.Connect(url, nats.Name(name), nats.Nkey(pub, kp.Sign), nats.NoReconnect(), nats.Timeout(5*time.Second))
	if err == nil {
		nc.Close()
	}
	return err
}

// TestWebSocketUnknownMachinesNotPending: made-up machine ids over the
// public WebSocket listener are refused without being recorded as
// pending (they would push real machines out of the list), with a
// refusal saying how such a machine joins; on the client port an unknown
// machine is still recorded.
func TestWebSocketUnknownMachinesNotPending(t *testing.T) {
	st, wsURL := startWSSessionStack(t, nil)
	for i := range 3 {
		if err := wsConnect(t, wsURL, "10.9.9.9_fake"+string(rune('a'+i))); err == nil {
			t.Fatal("an unknown machine was admitted over WebSocket")
		}
	}
	waitFor(t, "the refusals in the log", 5*time.Second, func() bool {
		return strings.Count(st.log.String(), "is not in the registry") >= 3
	})
	if p := st.svc.reg.Pending(); len(p) != 0 {
		t.Fatalf("WebSocket attempts recorded as pending: %+v", p)
	}
	if !strings.Contains(st.log.String(), "not recorded over WebSocket") || !strings.Contains(st.log.String(), "cc-bench machines add 10.9.9.9_fakea --pubkey KEY") {
		t.Errorf("the refusal does not say how to register the machine:\n%s", st.log.String())
	}
	// The client port still records unknown machines for an operator to accept.
	if err := wsConnect(t, st.svc.ClientURL(), "10.9.9.9_real"); err == nil {
		t.Fatal("an unknown machine was admitted on the client port")
	}
	waitFor(t, "the client port's attempt pending", 5*time.Second, func() bool {
		p := st.svc.reg.Pending()
		return len(p) == 1 && p[0].ID == "10.9.9.9_real"
	})
}

// TestWebSocketAttemptsLimitedPerAddress: every connection over WebSocket,
// not only sessions, counts against its address's bucket before any
// signature is checked: past the burst even a registered operator is
// refused there, while the client port is not limited.
func TestWebSocketAttemptsLimitedPerAddress(t *testing.T) {
	// A rate so low the bucket does not refill while the test runs.
	st, wsURL := startWSSessionStack(t, func(c *Config) { c.SessionRatePerIP, c.SessionBurstPerIP = 1e-9, 3 })
	for i := range 3 {
		if err := wsConnect(t, wsURL, "10.9.9.9_fake"+string(rune('a'+i))); err == nil {
			t.Fatal("an unknown machine was admitted over WebSocket")
		}
	}
	admin, err := LoadSeed(st.svc.AdminKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := admin.PublicKey()
	nc, err := nats.Connect(wsURL, nats.Name("op"), nats.Nkey(pub, admin.Sign), nats.NoReconnect(), nats.Timeout(5*time.Second))
	if err == nil {
		nc.Close()
		t.Fatal("the 4th WebSocket attempt from one address was admitted; want it refused by the per-address limit")
	}
	waitFor(t, "the rate refusal in the log", 5*time.Second, func() bool {
		return strings.Contains(st.log.String(), "too many session or WebSocket connections from 127.0.0.1")
	})
	st.operator(t, admin) // the client port is not limited
}

// TestSessionFloodDelaysOnlySessions: sessions are answered by workers of
// their own. With every one of them held inside an admission, agents'
// and operators' connections are still answered by the shared workers,
// and no more sessions than those workers are ever being decided.
func TestSessionFloodDelaysOnlySessions(t *testing.T) {
	st := startSessionStack(t, func(c *Config) { c.SessionBurstPerIP = 1000 })
	if err := ctlCall(st.admin, fleet.OpAppsAdd, fleet.AppRequest{Name: "slow", Functions: []string{"latencyCheck"}, Public: true}, nil); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var held atomic.Int32
	st.gate.setWait(func(app string) {
		if app == "slow" {
			held.Add(1)
			<-release
		}
	})
	t.Cleanup(func() { close(release) }) // before the service stops
	workers := sessionWorkers()
	keys := make([]nkeys.KeyPair, workers+8)
	for i := range keys {
		keys[i], _ = newKP(t)
	}
	for _, kp := range keys {
		go func() {
			if nc, _, err := st.session(kp, fleet.SessionHello{App: "slow"}); err == nil {
				nc.Close()
			}
		}()
	}
	waitFor(t, "every session worker held", 5*time.Second, func() bool { return held.Load() >= int32(workers) })
	admin, err := LoadSeed(st.svc.AdminKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := admin.PublicKey()
	nc, err := nats.Connect(st.svc.ClientURL(), nats.Name("op"), nats.Nkey(pub, admin.Sign), nats.NoReconnect(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("an operator's connection while the sessions' workers are held: %v", err)
	}
	nc.Close()
	if n := held.Load(); n > int32(workers) {
		t.Errorf("%d session admissions held at once, more than the %d session workers: the shared workers took sessions", n, workers)
	}
}
