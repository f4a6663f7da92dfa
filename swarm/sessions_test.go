package swarm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/swarm"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// plainWebSocketServer is a nats-server with a WebSocket listener and no
// auth (no callout): it shows what the simulated sessions send and answer,
// with the nonce an nkey client signs.
func plainWebSocketServer(t *testing.T) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		AlwaysEnableNonce: true, Websocket: server.WebsocketOpts{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoTLS: true}})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	return srv
}

func wsURL(t *testing.T, srv *server.Server) string {
	t.Helper()
	v, err := srv.Varz(nil)
	if err != nil || v.Websocket.Port <= 0 {
		t.Fatalf("no WebSocket port: %v", err)
	}
	return fmt.Sprintf("ws://127.0.0.1:%d", v.Websocket.Port)
}

// TestSimulatedSessionsAnswer: 50 simulated sessions connect over
// WebSocket, each from its own loopback address (the custom dialer is
// used for ws:// too), and each answers a call on its own subject with
// the latencyCheck result and the Cc-Call and Cc-Args headers; calls it
// may not answer (another target's reply subject, a call id that is not
// the reply's call token) are not answered as results.
func TestSimulatedSessionsAnswer(t *testing.T) {
	const n = 50
	srv := plainWebSocketServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ss, err := swarm.NewSessions(swarm.SessionsConfig{URL: wsURL(t, srv), N: n, App: "demo", Net: "127.66.0.0/22", First: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	if err := ss.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if ss.Connected() != n {
		t.Fatalf("%d of %d connected", ss.Connected(), n)
	}
	// Every session came from its own address: 127.66.0.11 onwards.
	cz, err := srv.Connz(&server.ConnzOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	ips := map[string]bool{}
	for _, c := range cz.Conns {
		ips[c.IP] = true
	}
	for i := range n {
		want := fmt.Sprintf("127.66.0.%d", 11+i)
		if ss.Addr(i) != want || !ips[want] {
			t.Fatalf("session %d: address %q (want %s), connected from it: %v", i, ss.Addr(i), want, ips[want])
		}
	}

	callerKP, _ := nkeys.CreateUser()
	caller, _ := callerKP.PublicKey()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const call = "c1"
	replies := make(chan *nats.Msg, 2*n)
	sub, err := nc.ChanSubscribe(fleet.CallReplies(caller, call), replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	args := []byte(`{"url":"http://127.0.0.1:9/x","count":4}`)
	ids := ss.IDs()
	for _, id := range ids {
		if !fleet.IsSessionID(id) {
			t.Fatalf("id %q is no session id", id)
		}
		m := nats.NewMsg(fleet.SessionFnSubject(id, swarm.FnLatencyCheck, caller))
		m.Reply = fleet.CallReply(caller, id, call, 0)
		m.Header.Set(fleet.HeaderCallID, call)
		m.Data = args
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for len(seen) < n {
		select {
		case m := <-replies:
			r, err := fleet.ParseCallReply(m.Subject)
			if err != nil {
				t.Fatal(err)
			}
			if m.Header.Get(fleet.HeaderError) != "" || m.Header.Get(fleet.HeaderCallID) != call || m.Header.Get(fleet.HeaderArgs) != fleet.ArgsDigest(args) {
				t.Fatalf("reply from %s: headers %v", r.Target, m.Header)
			}
			var res swarm.LatencyResult
			if err := json.Unmarshal(m.Data, &res); err != nil || res.URL != "http://127.0.0.1:9/x" || res.Count != 4 || res.Status != 200 {
				t.Fatalf("reply from %s: %s (%v)", r.Target, m.Data, err)
			}
			if seen[r.Target] {
				t.Fatalf("two replies from %s", r.Target)
			}
			seen[r.Target] = true
		case <-ctx.Done():
			t.Fatalf("%d of %d sessions answered", len(seen), n)
		}
	}
	for _, id := range ids {
		if !seen[id] {
			t.Fatalf("session %s did not answer", id)
		}
	}

	// A reply subject naming another session, and a call id that is not
	// the reply's call token: the first is not answered, the second is
	// answered 400.
	bad := nats.NewMsg(fleet.SessionFnSubject(ids[0], swarm.FnLatencyCheck, caller))
	bad.Reply = fleet.CallReply(caller, ids[1], call, 1)
	if err := nc.PublishMsg(bad); err != nil {
		t.Fatal(err)
	}
	wrong := nats.NewMsg(fleet.SessionFnSubject(ids[2], swarm.FnLatencyCheck, caller))
	wrong.Reply = fleet.CallReply(caller, ids[2], call, 2)
	wrong.Header.Set(fleet.HeaderCallID, "other")
	if err := nc.PublishMsg(wrong); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-replies:
		if !strings.HasSuffix(m.Subject, ids[2]+"."+call+".2") || m.Header.Get(fleet.HeaderErrorCode) != "400" || len(m.Data) != 0 {
			t.Fatalf("wrong call id: reply on %s, headers %v, body %q", m.Subject, m.Header, m.Data)
		}
	case <-ctx.Done():
		t.Fatal("no 400 for a call id that is not the call token")
	}
	for ss.Refused() < 2 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	if ss.Refused() != 2 || ss.Answered() != n {
		t.Fatalf("answered %d, refused %d; want %d and 2", ss.Answered(), ss.Refused(), n)
	}
	if len(replies) != 0 {
		t.Fatalf("an answer on another session's reply subject: %s", (<-replies).Subject)
	}
}

// TestBaselineSessions: plain responders (no key, no hello) answer their
// plain subjects with the same result.
func TestBaselineSessions(t *testing.T) {
	const n = 20
	srv := plainWebSocketServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ss, err := swarm.NewSessions(swarm.SessionsConfig{URL: wsURL(t, srv), N: n, Baseline: true, Net: "127.67.0.0/24", First: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	if err := ss.Start(ctx); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for i := range n {
		m, err := nc.RequestWithContext(ctx, swarm.BaselineSessionSubject(100+i), []byte(`{"url":"u"}`))
		if err != nil {
			t.Fatalf("responder %d: %v", i, err)
		}
		var res swarm.LatencyResult
		if err := json.Unmarshal(m.Data, &res); err != nil || res.URL != "u" || res.Count != 3 {
			t.Fatalf("responder %d: %s (%v)", i, m.Data, err)
		}
	}
}

// TestSessionAddrsBounds: addresses stay inside the network and short of
// its broadcast address, and a network off loopback is refused.
func TestSessionAddrsBounds(t *testing.T) {
	a, err := swarm.SessionAddrs("127.64.0.0/22", 0, 1000)
	if err != nil || a[0].String() != "127.64.0.1" || a[999].String() != "127.64.3.232" {
		t.Fatalf("addrs: %v %v", a[:1], err)
	}
	if _, err := swarm.SessionAddrs("127.64.0.0/22", 0, 1023); err == nil {
		t.Fatal("1,023 sessions fit in a /22 (the last would be the broadcast address)")
	}
	if _, err := swarm.SessionAddrs("10.0.0.0/8", 0, 1); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("10.0.0.0/8: %v", err)
	}
	if _, err := swarm.NewSessions(swarm.SessionsConfig{URL: "nats://127.0.0.1:4222", N: 1, App: "demo"}); err == nil || !strings.Contains(err.Error(), "ws://") {
		t.Fatalf("nats:// URL: %v", err)
	}
}
