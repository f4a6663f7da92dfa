package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// Tests of the broker's WebSocket listener (issue #13): whoever connects
// over WebSocket meets the same auth callout as on the client port.

// startWSControl starts a control service whose embedded broker also
// serves WebSocket on a free loopback port; change adjusts the broker's
// configuration first (nil: none).
func startWSControl(t *testing.T, change func(*broker.Config)) *controlsvc.Service {
	t.Helper()
	cfg := broker.Config{Listen: "127.0.0.1:0", WebSocketListen: "127.0.0.1:0", PingInterval: time.Second, MaxPingsOut: 2}
	if change != nil {
		change(&cfg)
	}
	return stacktest.StartControlWith(t, controlsvc.Config{DataDir: t.TempDir(), Broker: cfg, Logger: stacktest.Logger().With("side", "control")})
}

// connInfo is the broker's view of the connection named name.
func connInfo(t *testing.T, srv *server.Server, name string) *server.ConnInfo {
	t.Helper()
	cz, err := srv.Connz(&server.ConnzOptions{Username: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cz.Conns {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no connection named %s", name)
	return nil
}

// TestWebSocketAdmitsLikeTCP: an operator connecting over WebSocket is
// admitted by the callout as the same user, in the same account, with the
// same tags as over TCP; a machine's agent connecting over WebSocket comes
// ONLINE and answers the operator's calls, direct and broadcast.
func TestWebSocketAdmitsLikeTCP(t *testing.T) {
	svc := startWSControl(t, nil)
	wsURL := svc.Broker().WebSocketURL()
	if !strings.HasPrefix(wsURL, "ws://127.0.0.1:") {
		t.Fatalf("WebSocket URL %q", wsURL)
	}
	op := stacktest.LoadKey(t, newOperator(t, svc, "ops", "admin"))
	overWS := stacktest.Connect(t, wsURL, op, "op-ws")
	stacktest.Connect(t, svc.ClientURL(), op, "op-tcp")
	ws, tcp := connInfo(t, svc.Broker().Server(), "op-ws"), connInfo(t, svc.Broker().Server(), "op-tcp")
	if ws.Type != "websocket" || tcp.Type != "nats" {
		t.Errorf("connection types %q and %q, want websocket and nats", ws.Type, tcp.Type)
	}
	if ws.Account != broker.FleetAccount || ws.AuthorizedUser != tcp.AuthorizedUser || ws.Account != tcp.Account ||
		ws.NameTag != tcp.NameTag || strings.Join(ws.Tags, ",") != strings.Join(tcp.Tags, ",") {
		t.Errorf("over WebSocket admitted as user %q, account %s, tags %v; over TCP as %q, %s, %v",
			ws.AuthorizedUser, ws.Account, ws.Tags, tcp.AuthorizedUser, tcp.Account, tcp.Tags)
	}

	startAgentAt(t, svc, wsURL, "10.13.0.1_wsnode", true, map[string]string{"role": "test"})
	stacktest.WaitOnline(t, svc, "10.13.0.1_wsnode")
	// ONLINE is the broker's CONNECT event; the agent's subscriptions
	// follow its CONNECT over the WebSocket moments later: wait until it
	// answers at all, then check the answer.
	stacktest.WaitFor(t, "the agent on WebSocket to answer", 10*time.Second, func() bool {
		_, err := stacktest.Request(overWS, "10.13.0.1_wsnode", "current-load", []byte("{}"), 250*time.Millisecond)
		return err == nil
	})
	callLoad(t, overWS, "10.13.0.1_wsnode", "a call over WebSocket to an agent on WebSocket")
	broadcastReaches(t, overWS, 1, "a broadcast over WebSocket")
	snap, err := overWS.Request(fleet.PresenceSnapshotSubject, nil, 5*time.Second)
	if err != nil || !strings.Contains(string(snap.Data), "10.13.0.1_wsnode") {
		t.Fatalf("presence snapshot over WebSocket: %v %s", err, snapData(snap))
	}
}

func snapData(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}

// TestWebSocketRefusesUnknownKey: a key the registry does not know is
// refused over WebSocket as over TCP, and the refusal is audited with the
// connection's real address: an X-Forwarded-For header the client sends
// does not change what the control service is told.
func TestWebSocketRefusesUnknownKey(t *testing.T) {
	svc := startWSControl(t, nil)
	intruder := stacktest.NewKey(t)
	forged := nats.WebSocketConnectionHeaders(http.Header{"X-Forwarded-For": {"203.0.113.9"}})
	notAdmitted(t, svc.Broker().WebSocketURL(), intruder, "10.6.6.6_wsintruder", forged)
	admin, err := bench.Connect(svc.ClientURL(), bench.WithSeed(stacktest.AdminSeed(t, svc)))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	key := stacktest.Pub(t, intruder)
	var ip string
	stacktest.WaitFor(t, "the refusal in the audit log", 10*time.Second, func() bool {
		recs, err := admin.Audit(context.Background(), time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Kind == fleet.AuditRefused && r.Key == key {
				ip = r.IP
				return true
			}
		}
		return false
	})
	if ip != "127.0.0.1" {
		t.Errorf("refusal audited from %q, want the connection's own address 127.0.0.1 (not the forged 203.0.113.9)", ip)
	}
}

// TestWebSocketTLS: with the broker's certificate the WebSocket listener
// speaks only TLS (wss://): an operator who trusts the CA is admitted,
// a plain ws:// connection to the same port is not. With --tls-verify a
// WebSocket client needs a certificate the CA signed, as on the client
// port: mutual TLS has no way around it.
func TestWebSocketTLS(t *testing.T) {
	certs := stacktest.TLSFiles(t)
	files := broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA}
	svc := startWSControl(t, func(c *broker.Config) { c.TLS = files })
	wssURL := svc.Broker().WebSocketURL()
	if !strings.HasPrefix(wssURL, "wss://127.0.0.1:") {
		t.Fatalf("WebSocket URL with TLS %q, want wss://", wssURL)
	}
	op := stacktest.LoadKey(t, newOperator(t, svc, "ops", "admin"))
	nc := stacktest.Connect(t, wssURL, op, "op-wss", nats.Secure(stacktest.ClientTLS(t, certs.CA, "", "")))
	if _, err := nc.Request(fleet.PresenceSnapshotSubject, nil, 5*time.Second); err != nil {
		t.Fatalf("snapshot over wss: %v", err)
	}
	plainURL := "ws://" + strings.TrimPrefix(wssURL, "wss://")
	if nc, err := stacktest.Dial(plainURL, op, "op-ws-plain", nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatalf("plain ws:// to the TLS listener %s connected", plainURL)
	}

	files.Verify = true
	mutual := startWSControl(t, func(c *broker.Config) { c.TLS = files })
	op2 := stacktest.LoadKey(t, newOperator(t, mutual, "ops", "admin"))
	url := mutual.Broker().WebSocketURL()
	if nc, err := stacktest.Dial(url, op2, "op-nocert", nats.Secure(stacktest.ClientTLS(t, certs.CA, "", "")), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("wss without a client certificate connected to a broker with --tls-verify")
	}
	stacktest.Connect(t, url, op2, "op-cert", nats.Secure(stacktest.ClientTLS(t, certs.CA, certs.ClientCert, certs.ClientKey)))
}

// TestWebSocketOrigins: with allowed origins, a browser-like client
// whose page is from another origin is refused before authentication;
// one from an allowed origin is admitted by the callout.
func TestWebSocketOrigins(t *testing.T) {
	svc := startWSControl(t, func(c *broker.Config) { c.WebSocketOrigins = []string{"https://app.example"} })
	op := stacktest.LoadKey(t, newOperator(t, svc, "ops", "admin"))
	url := svc.Broker().WebSocketURL()
	origin := func(o string) nats.Option { return nats.WebSocketConnectionHeaders(http.Header{"Origin": {o}}) }
	if nc, err := stacktest.Dial(url, op, "op-evil", origin("https://evil.example")); err == nil {
		nc.Close()
		t.Fatal("a connection from origin https://evil.example was accepted")
	}
	nc := stacktest.Connect(t, url, op, "op-app", origin("https://app.example"))
	if _, err := nc.Request(fleet.PresenceSnapshotSubject, nil, 5*time.Second); err != nil {
		t.Fatalf("snapshot from the allowed origin: %v", err)
	}
}

// TestWebSocketClusterReachesCallout: the control service sits behind
// the first of two routed brokers; the second serves WebSocket. A
// machine and an operator connecting there over WebSocket are admitted
// by the callout across the route, the machine comes ONLINE and answers
// the operator's call, and an unknown machine is refused there too, and
// not recorded as pending.
func TestWebSocketClusterReachesCallout(t *testing.T) {
	dir := t.TempDir()
	bs := startClusterWith(t, dir, 2, func(i int, c *broker.Config) {
		if i == 1 {
			c.WebSocketListen = "127.0.0.1:0"
		}
	})
	if bs[0].WebSocketURL() != "" || bs[1].WebSocketURL() == "" {
		t.Fatalf("WebSocket URLs %q and %q, want only the second broker's", bs[0].WebSocketURL(), bs[1].WebSocketURL())
	}
	svc := controlBehind(t, dir, bs[0].ClientURL(), 5*time.Second)
	wsURL := bs[1].WebSocketURL()

	startAgentAt(t, svc, wsURL, "10.13.0.2_wsnode2", true, map[string]string{"role": "test"})
	stacktest.WaitOnline(t, svc, "10.13.0.2_wsnode2")
	nc := operatorConn(t, wsURL, newOperator(t, svc, "ops", "admin"))
	callLoad(t, nc, "10.13.0.2_wsnode2", "a call over WebSocket on the second broker")
	if c := connInfo(t, bs[1].Server(), "op-test"); c.Type != "websocket" || c.Account != broker.FleetAccount {
		t.Errorf("operator's connection on broker 2: type %q, account %q", c.Type, c.Account)
	}
	// The callout behind broker 1 refused it, without recording it as
	// pending: anyone may make up ids on the public WebSocket listener.
	// A stranger on broker 2's client port, refused after it, is pending.
	notAdmitted(t, wsURL, stacktest.NewKey(t), "10.6.6.7_wsstranger")
	notAdmitted(t, bs[1].ClientURL(), stacktest.NewKey(t), "10.6.6.8_stranger")
	stacktest.WaitFor(t, "the client port's stranger pending", 10*time.Second, func() bool {
		for _, p := range svc.Registry().Pending() {
			if p.ID == "10.6.6.8_stranger" {
				return true
			}
		}
		return false
	})
	for _, p := range svc.Registry().Pending() {
		if p.ID == "10.6.6.7_wsstranger" {
			t.Errorf("the WebSocket stranger was recorded as pending: %+v", p)
		}
	}
}

// notAdmitted dials url as kp and fails the test if the connection is
// made. Over WebSocket the refusal may show as the server's
// authorization error or as the connection it closed (nats.go may be
// writing when it does); the caller proves who refused it.
func notAdmitted(t *testing.T, url string, kp nkeys.KeyPair, name string, opts ...nats.Option) {
	t.Helper()
	nc, err := stacktest.Dial(url, kp, name, opts...)
	if err == nil {
		nc.Close()
		t.Fatalf("%s was admitted over %s", name, url)
	}
	t.Logf("%s refused: %v", name, err)
}
