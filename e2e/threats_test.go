package e2e

// Each test here is one line of SECURITY.md's threat model: a real client
// on a real connection tries the attack and is refused.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// TestThreatReplayedSignature: a client that presents a valid signature,
// but over another nonce than the one this server just sent (a captured
// handshake replayed), is refused.
func TestThreatReplayedSignature(t *testing.T) {
	svc := startControl(t, "")
	owner, _ := nkeys.CreateUser()
	pub, _ := owner.PublicKey()
	if _, err := svc.Registry().AddMachine("10.0.0.1_web01", pub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	captured, _ := owner.Sign([]byte("a nonce from an earlier handshake"))
	replay := func([]byte) ([]byte, error) { return captured, nil }
	_, err := nats.Connect(svc.ClientURL(), nats.Name("10.0.0.1_web01"), nats.Nkey(pub, replay), nats.Timeout(3*time.Second))
	if !isAuthErr(err) {
		t.Fatalf("replayed signature: got %v, want an authorization violation", err)
	}
	// An operator's key replayed the same way fares no better.
	admin, _ := nkeys.FromSeed(mustRead(t, svc.AdminKeyPath()))
	apub, _ := admin.PublicKey()
	old, _ := admin.Sign([]byte("yesterday's nonce"))
	_, err = nats.Connect(svc.ClientURL(), nats.Nkey(apub, func([]byte) ([]byte, error) { return old, nil }), nats.Timeout(3*time.Second))
	if !isAuthErr(err) {
		t.Fatalf("replayed operator signature: got %v, want an authorization violation", err)
	}
	// No key at all is refused too.
	if _, err := nats.Connect(svc.ClientURL(), nats.Name("10.0.0.1_web01"), nats.Timeout(3*time.Second)); !isAuthErr(err) {
		t.Fatalf("no key: got %v, want an authorization violation", err)
	}
}

// TestThreatCalloutResponseBinding: the broker accepts a callout answer
// only for the user nkey it generated for this connection and only when
// addressed to itself; an answer minted for another connection or another
// server does not admit the client. The test plays the callout with the
// service's own issuer key, so only the binding can refuse.
func TestThreatCalloutResponseBinding(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(req *jwt.AuthorizationRequestClaims, resp *jwt.AuthorizationResponseClaims, uc *jwt.UserClaims)
		admit  bool
	}{
		{"bound correctly", func(*jwt.AuthorizationRequestClaims, *jwt.AuthorizationResponseClaims, *jwt.UserClaims) {}, true},
		{"another connection's user nkey", func(_ *jwt.AuthorizationRequestClaims, resp *jwt.AuthorizationResponseClaims, uc *jwt.UserClaims) {
			_, other := newPub(t)
			resp.Subject, uc.Subject = other, other
		}, false},
		{"another server", func(_ *jwt.AuthorizationRequestClaims, resp *jwt.AuthorizationResponseClaims, _ *jwt.UserClaims) {
			resp.Audience = "NOTTHISSERVER"
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := t.TempDir()
			b := startExternal(t, data)
			keys, err := controlsvc.LoadOrCreateKeys(data)
			if err != nil {
				t.Fatal(err)
			}
			ctl := nkeyConn(t, b.ClientURL(), keys.Control)
			_, err = ctl.Subscribe(controlsvc.AuthCalloutSubject, func(m *nats.Msg) {
				xkey := m.Header.Get("Nats-Server-Xkey")
				body, err := keys.XKey.Open(m.Data, xkey)
				if err != nil {
					return
				}
				req, err := jwt.DecodeAuthorizationRequestClaims(string(body))
				if err != nil {
					return
				}
				resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
				resp.Audience = req.Server.ID
				uc := jwt.NewUserClaims(req.UserNkey)
				uc.Audience = broker.FleetAccount
				uc.Expires = time.Now().Add(time.Minute).Unix()
				tc.mutate(req, resp, uc)
				resp.Jwt, _ = uc.Encode(keys.Issuer)
				tok, _ := resp.Encode(keys.Issuer)
				sealed, _ := keys.XKey.Seal([]byte(tok), xkey)
				_ = m.Respond(sealed)
			})
			if err != nil {
				t.Fatal(err)
			}
			_ = ctl.Flush()
			kp, _ := nkeys.CreateUser()
			nc, err := connectAs(b.ClientURL(), kp, "client")
			if tc.admit {
				if err != nil {
					t.Fatalf("a correctly bound answer was refused: %v", err)
				}
				nc.Close()
				return
			}
			if err == nil {
				nc.Close()
				t.Fatal("the broker admitted a client on an answer bound to something else")
			}
		})
	}
}

func newPub(t *testing.T) (nkeys.KeyPair, string) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	return kp, pub
}

// nkeyConn connects as one of the control service's own nkey users.
func nkeyConn(t *testing.T, url string, kp nkeys.KeyPair) *nats.Conn {
	t.Helper()
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(url, nats.Nkey(pub, kp.Sign), nats.Timeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestThreatCalloutRequestsEncrypted: what the broker sends the callout
// (the client's name, key, address) travels encrypted for the service's
// xkey; a listener on the callout subject sees ciphertext.
func TestThreatCalloutRequestsEncrypted(t *testing.T) {
	data := t.TempDir()
	b := startExternal(t, data)
	svc := startControlOn(t, data, b.ClientURL())
	spy := nkeyConn(t, b.ClientURL(), svc.Keys().Control)
	sub, err := spy.SubscribeSync(controlsvc.AuthCalloutSubject)
	if err != nil {
		t.Fatal(err)
	}
	_ = spy.Flush()
	startAgent(t, svc, "10.0.0.1_web01", true)
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Nats-Server-Xkey") == "" {
		t.Fatal("callout request without the Nats-Server-Xkey header: it is not encrypted")
	}
	if _, err := jwt.DecodeAuthorizationRequestClaims(string(m.Data)); err == nil {
		t.Fatal("the callout request decodes as a JWT in clear")
	}
	if bytes.Contains(m.Data, []byte("eyJ")) || bytes.Contains(m.Data, []byte("web01")) {
		t.Fatal("the callout request shows JWT or client name text in clear")
	}
	pub, _ := svc.Keys().XKey.PublicKey()
	if _, err := svc.Keys().XKey.Open(m.Data, m.Header.Get("Nats-Server-Xkey")); err != nil {
		t.Fatalf("the request does not open with the service's xkey %s: %v", pub, err)
	}
}

// TestThreatAgentCannotImpersonateOrEavesdrop: an agent cannot publish
// presence events or control requests, cannot send replies nobody asked
// it for, cannot answer one request twice, and cannot reach $SYS or
// JetStream.
func TestThreatAgentCannotImpersonateOrEavesdrop(t *testing.T) {
	svc := startControl(t, "")
	op := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	const id = "10.0.0.1_web01"
	if _, err := svc.Registry().AddMachine(id, pub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	nc, errs := permConn(t, svc.ClientURL(), kp, id)
	// ONLINE before it is called: a call to a machine presence has not
	// seen yet is answered "no responders" by the control service.
	stacktest.WaitFor(t, "machine online", 5*time.Second, func() bool { return stacktest.Online(svc, id) })
	steps := []struct {
		what string
		try  func() error
	}{
		{"publish a presence event", func() error {
			return nc.Publish(fleet.PresenceEventSubject(fleet.EventJoined, "10.6.6.6_fake"), []byte(`{"event":"joined","machine":"10.6.6.6_fake"}`))
		}},
		{"request the presence snapshot", func() error { return nc.PublishRequest(fleet.PresenceSnapshotSubject, "_INBOX_cc.x.y", nil) }},
		{"use the control API", func() error { return nc.Publish(fleet.CtlSubject(op.Opts.Nkey, fleet.OpMachinesList), nil) }},
		{"send an unsolicited reply into the admin's inbox", func() error {
			return nc.Publish(fleet.OperatorInbox(op.Opts.Nkey)+".forged.1", []byte(`{"load1":0}`))
		}},
		{"subscribe to $SYS", func() error { _, err := nc.SubscribeSync("$SYS.>"); return err }},
		{"subscribe to operator inboxes", func() error { _, err := nc.SubscribeSync(fleet.InboxesWildcard); return err }},
		{"publish to $SYS", func() error { return nc.Publish("$SYS.REQ.SERVER.PING", nil) }},
		{"reach JetStream", func() error { return nc.PublishRequest("$JS.API.INFO", "_INBOX_cc.x.y", nil) }},
	}
	for _, s := range steps {
		if err := s.try(); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		expectViolation(t, errs, s.what)
	}
	// It answers only under its own token: a reply for another machine,
	// even into the very inbox of a call it received, is refused.
	sub, err := nc.SubscribeSync(fleet.MachineCallsWildcard(fleet.MachineToken(id)))
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	key := op.Opts.Nkey
	replies, _ := op.SubscribeSync(fleet.CallReplies(key, "c1"))
	_ = op.Flush()
	if err := op.PublishRequest(fleet.FnSubject(id, "echo", key), fleet.CallReply(key, fleet.MachineToken(id), "c1", 0), nil); err != nil {
		t.Fatal(err)
	}
	req, err := sub.NextMsg(3 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(fleet.CallReply(key, fleet.MachineToken("10.0.0.2_web02"), "c1", 0), []byte(`"forged"`)); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "answer for another machine")
	_ = req.Respond([]byte(`"mine"`))
	m, err := replies.NextMsg(2 * time.Second)
	if err != nil || string(m.Data) != `"mine"` || stacktest.Replier(m) != id {
		t.Fatalf("own reply: got %v %v", m, err)
	}
}

// TestThreatAgentNotTurnedIntoAPublisher: a caller cannot choose a reply
// subject that makes an agent publish outside operator inboxes (here a
// forged presence event): the agent refuses such a call.
func TestThreatAgentNotTurnedIntoAPublisher(t *testing.T) {
	svc := startControl(t, "")
	a := startAgent(t, svc, "10.0.0.1_web01", true, echoFn())
	stacktest.WaitFor(t, "agent online", 5*time.Second, func() bool { return stacktest.Online(svc, a.MachineID()) })
	op := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	events, err := op.SubscribeSync(fleet.PresenceEventsWildcard)
	if err != nil {
		t.Fatal(err)
	}
	_ = op.Flush()
	forged := fleet.PresenceEventSubject(fleet.EventLeft, a.MachineID())
	if err := op.PublishRequest(fleet.FnSubject(a.MachineID(), "echo", op.Opts.Nkey), forged, []byte(`{"msg":"{\"event\":\"left\"}"}`)); err != nil {
		t.Fatal(err)
	}
	if m, err := events.NextMsg(time.Second); err == nil {
		t.Fatalf("the agent published on %s: %q", m.Subject, m.Data)
	}
	if _, err := stacktest.Request(op, a.MachineID(), "echo", []byte(`{"msg":"ok"}`), 2*time.Second); err != nil {
		t.Fatalf("a normal call after the refused one: %v", err)
	}
}

// TestThreatOperatorConfined: an operator cannot read $SYS, other
// operators' inboxes, the agents' call subjects or JetStream, and cannot
// forge presence events.
func TestThreatOperatorConfined(t *testing.T) {
	svc := startControl(t, "")
	admin := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	seed := newOperator(t, svc, "mallory", fleet.RoleAdmin)
	kp, _ := nkeys.FromSeed(mustRead(t, seed))
	nc, errs := permConn(t, svc.ClientURL(), kp, "mallory")
	steps := []struct {
		what string
		try  func() error
	}{
		{"subscribe to $SYS.>", func() error { _, err := nc.SubscribeSync("$SYS.>"); return err }},
		{"subscribe to another operator's inbox", func() error {
			_, err := nc.SubscribeSync(fleet.OperatorInboxWildcard(admin.Opts.Nkey))
			return err
		}},
		{"subscribe to every inbox", func() error { _, err := nc.SubscribeSync(fleet.InboxesWildcard); return err }},
		{"subscribe to call subjects", func() error { _, err := nc.SubscribeSync(fleet.DirectCallsWildcard); return err }},
		{"subscribe to broadcast calls", func() error { _, err := nc.SubscribeSync(fleet.BroadcastsWildcard); return err }},
		{"subscribe to control requests", func() error { _, err := nc.SubscribeSync(fleet.CtlRoot + ".>"); return err }},
		{"forge a presence event", func() error {
			return nc.Publish(fleet.PresenceEventSubject(fleet.EventLeft, "10.0.0.1_web01"), []byte(`{"event":"left"}`))
		}},
		{"publish to $SYS", func() error { return nc.Publish("$SYS.REQ.SERVER.PING.CONNZ", nil) }},
		{"reach JetStream", func() error { return nc.Publish("$JS.API.STREAM.INFO.CC_AUDIT", nil) }},
	}
	for _, s := range steps {
		if err := s.try(); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		expectViolation(t, errs, s.what)
	}
}

// TestThreatViewerLimitedByTheBroker: a viewer's call to a function
// outside the read-only list is stopped by the broker (a permissions
// violation, the agent never sees it), and the viewer may neither manage
// the registry nor read the audit log.
func TestThreatViewerLimitedByTheBroker(t *testing.T) {
	svc := startControl(t, "")
	var mu sync.Mutex
	ran := 0
	mutate := functions.FuncOf(functions.Spec{Name: "reboot", Help: "mutates"}, func(context.Context, functions.Args) (any, error) {
		mu.Lock()
		ran++
		mu.Unlock()
		return "rebooting", nil
	})
	a := startAgent(t, svc, "10.0.0.1_web01", true, mutate)
	stacktest.WaitFor(t, "agent online", 5*time.Second, func() bool { return stacktest.Online(svc, a.MachineID()) })
	kp, _ := nkeys.FromSeed(mustRead(t, newOperator(t, svc, "val", fleet.RoleViewer)))
	nc, errs := permConn(t, svc.ClientURL(), kp, "val")
	if err := stacktest.Send(nc, a.MachineID(), "reboot", nil); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "viewer calls reboot on one machine")
	if err := nc.PublishRequest(fleet.AllSubject("reboot", kpPub(kp)), fleet.CallReply(kpPub(kp), fleet.ReplyToAll, "c", 0), nil); err != nil {
		t.Fatal(err)
	}
	expectViolation(t, errs, "viewer calls reboot on every machine")
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	if ran != 0 {
		t.Fatalf("the agent ran reboot %d times for a viewer", ran)
	}
	mu.Unlock()
	// A read-only function is fine.
	if _, err := stacktest.Request(nc, a.MachineID(), "current-load", nil, 3*time.Second); err != nil {
		t.Fatalf("viewer read-only call: %v", err)
	}
	for _, op := range []string{fleet.OpMachinesRemove, fleet.OpMachinesAccept, fleet.OpMachinesLabel, fleet.OpOperatorsRemove, fleet.OpAudit} {
		var fe *fleet.Error
		if err := ctlErr(nc, op, fleet.MachineRequest{ID: a.MachineID()}, nil); !errors.As(err, &fe) || fe.Code != fleet.CodeForbidden {
			t.Errorf("viewer %s: got %v, want 403", op, err)
		}
	}
	if _, ok := svc.Registry().Machine(a.MachineID()); !ok {
		t.Fatal("the viewer removed a machine")
	}
}

// TestThreatRevokedOperatorKicked: removing an operator closes its live
// connection within a second and its key is refused from then on (a
// stolen key dies with the removal).
func TestThreatRevokedOperatorKicked(t *testing.T) {
	svc := startControl(t, "")
	admin := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	seed := newOperator(t, svc, "stolen", fleet.RoleAdmin)
	kp, _ := nkeys.FromSeed(mustRead(t, seed))
	closed := make(chan struct{})
	nc, err := connectAs(svc.ClientURL(), kp, "thief", nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// No wait for the broker's connect event: the removal may run before
	// the service has heard of the connection (it is then closed when the
	// event arrives) or after (the removal closes it); either way within
	// the second.
	start := time.Now()
	var rm fleet.RemoveResult
	ctl(t, admin, fleet.OpOperatorsRemove, fleet.OperatorRequest{Name: "stolen"}, &rm)
	select {
	case <-closed:
		t.Logf("removed operator disconnected after %s (closed %d)", time.Since(start), rm.Closed)
	case <-time.After(time.Second):
		t.Fatalf("removed operator still connected after 1s (closed %d)", rm.Closed)
	}
	if _, err := connectAs(svc.ClientURL(), kp, "thief"); !isAuthErr(err) {
		t.Fatalf("removed operator's key: got %v, want refused", err)
	}
}

// TestThreatCredentialsExpire: credentials live --user-ttl; a key removed
// from the registry behind the control API's back (no kick) is cut off
// when its credentials expire, because re-authorisation fails.
func TestThreatCredentialsExpire(t *testing.T) {
	data := t.TempDir()
	svc := stacktest.StartControlWith(t, controlsvc.Config{DataDir: data, UserTTL: 2 * time.Second, Logger: stacktest.Logger(),
		Broker: broker.Config{Listen: "127.0.0.1:0", PingInterval: time.Second, MaxPingsOut: 2}})
	seed := newOperator(t, svc, "temp", fleet.RoleViewer)
	kp, _ := nkeys.FromSeed(mustRead(t, seed))
	expired := make(chan struct{}, 1)
	nc, err := connectAs(svc.ClientURL(), kp, "temp", nats.MaxReconnects(3), nats.ReconnectWait(100*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrAuthExpired) {
				select {
				case expired <- struct{}{}:
				default:
				}
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The service must know the connection before the key goes, or it
	// closes it as soon as it hears of it (TestThreatRevokedOperatorKicked)
	// and this would not test expiry.
	stacktest.WaitFor(t, "the service to see the operator's connection", 5*time.Second, func() bool { return svc.OperatorConnections("temp") == 1 })
	if _, err := svc.Registry().RemoveOperator("temp"); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitFor(t, "expired credentials to cut the connection", 6*time.Second, func() bool { return !nc.IsConnected() })
	select {
	case <-expired:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection was not cut for expired credentials")
	}
	if _, err := connectAs(svc.ClientURL(), kp, "temp"); !isAuthErr(err) {
		t.Fatalf("removed key: got %v, want refused", err)
	}
}

// TestThreatConnectionFlood: a burst of connection attempts from unknown
// keys is refused without starving a legitimate client, and the pending
// list stays bounded (controlsvc.MaxPending).
func TestThreatConnectionFlood(t *testing.T) {
	// The production ping interval, so the handshake bound (AuthTimeout)
	// is the default 5 s rather than the 0.8 s the fast-ping tests get.
	svc := stacktest.StartControlWith(t, controlsvc.Config{DataDir: t.TempDir(), Logger: stacktest.Logger(),
		Broker: broker.Config{Listen: "127.0.0.1:0"}})
	const n = 300
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for i := range n {
		wg.Go(func() {
			kp, _ := nkeys.CreateUser()
			nc, err := connectAs(svc.ClientURL(), kp, fmt.Sprintf("10.9.%d.%d_flood", i/250, i%250), nats.Timeout(10*time.Second))
			if err == nil {
				mu.Lock()
				admitted++
				mu.Unlock()
				nc.Close()
			}
		})
	}
	// Meanwhile the admin still gets in, and quickly.
	start := time.Now()
	akp, _ := nkeys.FromSeed(mustRead(t, svc.AdminKeyPath()))
	admin, err := connectAs(svc.ClientURL(), akp, "admin", nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("the admin could not connect during the flood: %v", err)
	}
	defer admin.Close()
	var who fleet.WhoAmI
	ctl(t, admin, fleet.OpWhoAmI, nil, &who)
	took := time.Since(start)
	wg.Wait()
	if admitted != 0 {
		t.Fatalf("%d flooding clients were admitted", admitted)
	}
	if took > 5*time.Second {
		t.Fatalf("the admin waited %s to connect during the flood", took)
	}
	if p := len(svc.Registry().Pending()); p != n || p > controlsvc.MaxPending {
		t.Fatalf("pending: %d entries, want %d (bounded by %d)", p, n, controlsvc.MaxPending)
	}
	t.Logf("%d refused; admin connected in %s", n, took)
}

// TestThreatAgentOverload: an agent past its concurrency limit answers 503
// at once instead of queueing without bound, and an oversized request is
// refused with 413 by the agent or by the broker's payload limit.
func TestThreatAgentOverload(t *testing.T) {
	svc := startControl(t, "")
	release := make(chan struct{})
	defer close(release)
	block := functions.FuncOf(functions.Spec{Name: "block", Help: "blocks", ReadOnly: true}, func(ctx context.Context, _ functions.Args) (any, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "done", nil
	})
	a := startAgentWith(t, svc, agent.Config{URL: svc.ClientURL(), MachineID: "10.0.0.1_web01", MaxConcurrent: 2}, true, nil, block, echoFn())
	stacktest.WaitFor(t, "agent online", 5*time.Second, func() bool { return stacktest.Online(svc, a.MachineID()) })
	// Two operators each start a blocking call: one operator may hold
	// only half the slots (row 17), so it takes two to fill the agent.
	op := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	for _, who := range []*nats.Conn{operatorConn(t, svc.ClientURL(), newOperator(t, svc, "b1", fleet.RoleAdmin)), operatorConn(t, svc.ClientURL(), newOperator(t, svc, "b2", fleet.RoleAdmin))} {
		if err := stacktest.Send(who, a.MachineID(), "block", nil); err != nil {
			t.Fatal(err)
		}
		_ = who.Flush()
	}
	// The two blocking calls take both slots once the agent has them (a
	// quick echo that gets in first frees its slot at once).
	code := func(m *nats.Msg) int {
		if e := fleet.ErrorFromHeader(m.Header.Get(fleet.HeaderErrorCode), m.Header.Get(fleet.HeaderError)); e != nil {
			return e.Code
		}
		return 0
	}
	stacktest.WaitFor(t, "both slots taken", 5*time.Second, func() bool {
		m, err := stacktest.Request(op, a.MachineID(), "echo", []byte(`{"msg":"x"}`), 2*time.Second)
		return err == nil && code(m) == fleet.CodeUnavailable
	})
	start := time.Now()
	m, err := stacktest.Request(op, a.MachineID(), "echo", []byte(`{"msg":"x"}`), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if c := code(m); c != fleet.CodeUnavailable {
		t.Fatalf("another call on a full agent: got %d, want 503", c)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the 503 took %s", d)
	}
	// An oversized request or an unknown function is refused with its
	// own error even while every slot is taken.
	big := []byte(`{"msg":"` + strings.Repeat("x", functions.MaxRequestSize) + `"}`)
	m, err = stacktest.Request(op, a.MachineID(), "echo", big, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if e := fleet.ErrorFromHeader(m.Header.Get(fleet.HeaderErrorCode), m.Header.Get(fleet.HeaderError)); e == nil || e.Code != fleet.CodeTooLarge {
		t.Fatalf("oversized request on a full agent: got %v, want 413", e)
	}
	m, err = stacktest.Request(op, a.MachineID(), "no-such-fn", nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if e := fleet.ErrorFromHeader(m.Header.Get(fleet.HeaderErrorCode), m.Header.Get(fleet.HeaderError)); e == nil || e.Code != fleet.CodeNotFound {
		t.Fatalf("unknown function on a full agent: got %v, want 404", e)
	}
	// Once the blocked calls finish, the agent answers again.
	release <- struct{}{}
	release <- struct{}{}
	stacktest.WaitFor(t, "echo answered after the slots freed", 5*time.Second, func() bool {
		m, err := stacktest.Request(op, a.MachineID(), "echo", []byte(`{"msg":"x"}`), 2*time.Second)
		return err == nil && m.Header.Get(fleet.HeaderErrorCode) == ""
	})
	if err := op.Publish(fleet.AllSubject("echo", op.Opts.Nkey), make([]byte, op.MaxPayload()+1)); !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("over the broker's limit: got %v, want %v", err, nats.ErrMaxPayload)
	}
}

var seedShape = regexp.MustCompile(`S[UANXOC][A-Z2-7]{56}`)

// TestThreatSecretsOnDisk: every key file is mode 0600; a key file others
// can read stops the control service and the agent from starting; no
// seed appears in the logs or in the files the service shares.
func TestThreatSecretsOnDisk(t *testing.T) {
	data := t.TempDir()
	var logs stacktest.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc := stacktest.StartControlWith(t, controlsvc.Config{DataDir: data, Logger: logger,
		Broker: broker.Config{Listen: "127.0.0.1:0", PingInterval: time.Second, MaxPingsOut: stacktest.MaxPingsOut, Debug: true}})
	a := startAgent(t, svc, "10.0.0.1_web01", true)
	stacktest.WaitFor(t, "agent online", 5*time.Second, func() bool { return stacktest.Online(svc, a.MachineID()) })
	op := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	var who fleet.WhoAmI
	ctl(t, op, fleet.OpWhoAmI, nil, &who)
	svc.Close()

	keyFiles, _ := filepath.Glob(filepath.Join(data, "keys", "*.nk"))
	keyFiles = append(keyFiles, filepath.Join(data, controlsvc.AdminKeyFile))
	var seeds [][]byte
	for _, f := range keyFiles {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
		seeds = append(seeds, mustRead(t, f))
	}
	for _, shared := range []string{controlsvc.BrokerAuthFile, controlsvc.RegistryFile} {
		b, _ := os.ReadFile(filepath.Join(data, shared))
		for _, s := range seeds {
			if bytes.Contains(b, s) {
				t.Errorf("%s contains a seed", shared)
			}
		}
	}
	out := logs.Bytes()
	if len(out) == 0 {
		t.Fatal("no logs captured")
	}
	for i, s := range seeds {
		if bytes.Contains(out, s) {
			t.Errorf("the logs contain the seed of %s", keyFiles[i])
		}
	}
	// Anything shaped like a seed (S, a kind, 56 base32 characters) that
	// decodes as one: a bare "SUA" also occurs inside public keys.
	for _, cand := range seedShape.FindAll(out, -1) {
		if _, err := nkeys.FromSeed(cand); err == nil {
			t.Errorf("the logs contain an nkey seed: %.8s…", cand)
		}
	}

	// World-readable keys are refused.
	if err := os.Chmod(filepath.Join(data, "keys", "callout-issuer.nk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := controlsvc.New(controlsvc.Config{DataDir: data}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("control service with a world-readable key: got %v, want a refusal naming chmod 600", err)
	}
	agentKey := filepath.Join(t.TempDir(), "agent.nk")
	if _, err := agent.New(agent.Config{KeyFile: agentKey, MachineID: "10.0.0.2_x"}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(agentKey); fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent key created with mode %v", fi.Mode().Perm())
	}
	_ = os.Chmod(agentKey, 0o640)
	if _, err := agent.New(agent.Config{KeyFile: agentKey, MachineID: "10.0.0.2_x"}); err == nil {
		t.Fatal("the agent started with a group-readable key")
	}
}

func kpPub(kp nkeys.KeyPair) string {
	pub, _ := kp.PublicKey()
	return pub
}
