package controlsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// sessionStack is a real control service (embedded broker, real callout,
// real session presence) with a gate recording what admission tells
// session presence, a token clock the test moves and its log kept.
type sessionStack struct {
	svc  *Service
	gate *fakeGate
	// tokenOffset moves the clock session tokens are checked against
	// (the broker judges the rest by its own clock).
	tokenOffset atomic.Int64
	log         *syncBuffer
	admin       *nats.Conn
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startSessionStack(t *testing.T, mod func(*Config)) *sessionStack {
	t.Helper()
	st := &sessionStack{gate: &fakeGate{}, log: &syncBuffer{}}
	cfg := Config{
		DataDir: t.TempDir(),
		Broker:  broker.Config{Listen: "127.0.0.1:0"},
		Logger:  slog.New(slog.NewTextHandler(st.log, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st.gate.next = svc.sessions
	svc.sessions = st.gate
	svc.sessionNow = func() time.Time { return svc.cfg.Now().Add(time.Duration(st.tokenOffset.Load())) }
	ctx, cancel := context.WithCancel(context.Background())
	if err := svc.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); svc.Close() })
	st.svc = svc
	kp, err := LoadSeed(svc.AdminKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	st.admin = st.operator(t, kp)
	return st
}

// operator connects as the operator holding kp.
func (st *sessionStack) operator(t *testing.T, kp nkeys.KeyPair, opts ...nats.Option) *nats.Conn {
	t.Helper()
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(st.svc.ClientURL(), append([]nats.Option{nats.Name("op"), nats.Nkey(pub, kp.Sign),
		nats.CustomInboxPrefix(fleet.ControlInbox(pub)), nats.NoReconnect()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// ctl runs a control API operation as the operator on nc.
func ctlCall(nc *nats.Conn, op string, req, out any) error {
	body, _ := json.Marshal(req)
	m, err := nc.Request(fleet.CtlSubject(nc.Opts.Nkey, op), body, 5*time.Second)
	if err != nil {
		return err
	}
	if e := fleet.ErrorFromHeader(m.Header.Get(fleet.HeaderErrorCode), m.Header.Get(fleet.HeaderError)); e != nil {
		return e
	}
	if out != nil {
		return json.Unmarshal(m.Data, out)
	}
	return nil
}

// session connects as a session holding kp with hello h; its permission
// violations arrive on the returned channel.
func (st *sessionStack) session(kp nkeys.KeyPair, h fleet.SessionHello) (*nats.Conn, chan error, error) {
	pub, _ := kp.PublicKey()
	b, _ := json.Marshal(h)
	errs := make(chan error, 16)
	nc, err := nats.Connect(st.svc.ClientURL(), nats.Token(string(b)), nats.Nkey(pub, kp.Sign), nats.NoReconnect(),
		nats.Timeout(5*time.Second), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	return nc, errs, err
}

func (st *sessionStack) mustSession(t *testing.T, kp nkeys.KeyPair, h fleet.SessionHello) (*nats.Conn, chan error) {
	t.Helper()
	nc, errs, err := st.session(kp, h)
	if err != nil {
		t.Fatalf("session of %s refused: %v", h.App, err)
	}
	t.Cleanup(nc.Close)
	// Calls go to ONLINE sessions (the service answers "no responders"
	// for the others): wait until presence has it.
	pub, _ := kp.PublicKey()
	id := fleet.SessionID(h.App, pub)
	deadline := time.Now().Add(10 * time.Second)
	for !st.svc.presence.sessions.isOnline(id) {
		if time.Now().After(deadline) {
			t.Fatalf("session %s of %s never ONLINE", id, h.App)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nc, errs
}

// refused checks that the session's connection was refused and that the
// service logged why.
func (st *sessionStack) refused(t *testing.T, kp nkeys.KeyPair, h fleet.SessionHello, why string) {
	t.Helper()
	before := strings.Count(st.log.String(), why)
	nc, _, err := st.session(kp, h)
	if err == nil {
		nc.Close()
		t.Fatalf("session of %s admitted; want it refused (%s)", h.App, why)
	}
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("session of %s: got %v, want an authorization violation", h.App, err)
	}
	waitFor(t, "the refusal "+why+" in the log", 5*time.Second, func() bool {
		return strings.Count(st.log.String(), why) > before
	})
}

func violation(t *testing.T, errs chan error, what string) {
	t.Helper()
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("%s: got %v, want a permissions violation", what, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no permissions violation reported", what)
	}
}

func noViolation(t *testing.T, nc *nats.Conn, errs chan error, what string) {
	t.Helper()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		t.Fatalf("%s: %v", what, err)
	default:
	}
}

func newKP(t *testing.T) (nkeys.KeyPair, string) { return newUser(t) }

// TestSessionConfinedToItsOwnSubjects: a public app's session, admitted
// through the real callout, answers its own calls and nothing else.
func TestSessionConfinedToItsOwnSubjects(t *testing.T) {
	st := startSessionStack(t, nil)
	var created fleet.AppCreated
	if err := ctlCall(st.admin, fleet.OpAppsAdd, fleet.AppRequest{Name: "speedtest", Functions: []string{"latencyCheck"}, Public: true}, &created); err != nil {
		t.Fatal(err)
	}
	kp, pub := newKP(t)
	id := fleet.SessionID("speedtest", pub)
	sess, errs := st.mustSession(t, kp, fleet.SessionHello{App: "speedtest", Platform: "browser"})
	if got := st.gate.all(); len(got) != 1 || got[0].ID != id || got[0].IP != "127.0.0.1" || got[0].Declared.Platform != "browser" {
		t.Fatalf("gate told %+v", got)
	}

	// Its own function: an admin's call arrives and its answer goes back.
	sub, err := sess.SubscribeSync(fleet.SessionFnWildcard(id, "latencyCheck"))
	if err != nil {
		t.Fatal(err)
	}
	noViolation(t, sess, errs, "own function subject refused")
	adminKey := st.admin.Opts.Nkey
	reply := fleet.CallReply(adminKey, id, "c1", 0)
	replies, err := st.admin.SubscribeSync(fleet.CallReplies(adminKey, "c1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.admin.PublishRequest(fleet.SessionFnSubject(id, "latencyCheck", adminKey), reply, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("the session did not get its call: %v\n%s", err, st.log.String())
	}
	if err := sess.Publish(m.Reply, []byte(`{"ms":3}`)); err != nil {
		t.Fatal(err)
	}
	if r, err := replies.NextMsg(5 * time.Second); err != nil || string(r.Data) != `{"ms":3}` {
		t.Fatalf("the admin got %v, %v; want the session's answer", r, err)
	}
	noViolation(t, sess, errs, "own reply refused")

	// Everything else is refused.
	_, other := newKP(t)
	otherID := fleet.SessionID("speedtest", other)
	for _, p := range []struct{ what, subject string }{
		{"call a machine", fleet.FnSubject("10.0.0.5_web01", "echo", pub)},
		{"call another session", fleet.SessionFnSubject(otherID, "latencyCheck", pub)},
		{"answer as another session", fleet.CallReply(adminKey, otherID, "c1", 0)},
		{"answer as a machine", fleet.CallReply(adminKey, fleet.MachineToken("10.0.0.5_web01"), "c1", 0)},
		{"publish a presence event", fleet.SessionEventSubject("joined", id)},
		{"ask the presence snapshot", fleet.PresenceSnapshotSubject},
		{"ask the session snapshot", fleet.CtlSubject(pub, fleet.OpSessionsSnapshot)},
		{"use the control API", fleet.CtlSubject(pub, fleet.OpWhoAmI)},
	} {
		if err := sess.Publish(p.subject, []byte("x")); err != nil {
			t.Fatal(err)
		}
		violation(t, errs, p.what)
	}
	for _, s := range []struct{ what, subject string }{
		{"listen to another session's calls", fleet.SessionFnWildcard(otherID, "latencyCheck")},
		{"listen to its other functions", fleet.SessionFnWildcard(id, "trace")},
		{"listen to every session call", fleet.SessionCallsWildcard},
		{"listen to machine calls", fleet.DirectCallsWildcard},
		{"watch session presence", fleet.SessionEventsWildcard},
		{"watch machine presence", fleet.PresenceEventsWildcard},
		{"read replies", fleet.InboxRoot + ".>"},
	} {
		if _, err := sess.SubscribeSync(s.subject); err != nil {
			t.Fatal(err)
		}
		violation(t, errs, s.what)
	}
}

// TestSignedSessionAdmission: a signed app's session is admitted with a
// token from the app's key and refused with a bad one, the reason logged.
func TestSignedSessionAdmission(t *testing.T) {
	st := startSessionStack(t, nil)
	var bank, other fleet.AppCreated
	if err := ctlCall(st.admin, fleet.OpAppsAdd, fleet.AppRequest{Name: "bank", Functions: []string{"latencyCheck"}}, &bank); err != nil {
		t.Fatal(err)
	}
	if err := ctlCall(st.admin, fleet.OpAppsAdd, fleet.AppRequest{Name: "other", Functions: []string{"latencyCheck"}}, &other); err != nil {
		t.Fatal(err)
	}
	if bank.Seed == "" || other.Seed == "" {
		t.Fatal("a signed app was created without a seed")
	}
	now := st.svc.cfg.Now()
	kp, pub := newKP(t)
	claims := fleet.SessionTokenClaims{App: "bank", Subject: "user-7", IssuedAt: now.Unix(), Expires: now.Add(time.Minute).Unix(), Key: pub}
	good := signToken(t, claims, bank.Seed)
	sess, _ := st.mustSession(t, kp, fleet.SessionHello{App: "bank", Token: good})
	sess.Close()
	if got := st.gate.all(); len(got) != 1 || got[0].User != "user-7" || got[0].Admission != fleet.AdmissionSigned {
		t.Fatalf("gate told %+v", got)
	}

	st.refused(t, kp, fleet.SessionHello{App: "bank", Token: signToken(t, claims, other.Seed)}, "not signed by the app")
	st.refused(t, kp, fleet.SessionHello{App: "bank"}, "admits only sessions with a token")
	_, stranger := newKP(t)
	bound := claims
	bound.Key = stranger
	st.refused(t, kp, fleet.SessionHello{App: "bank", Token: signToken(t, bound, bank.Seed)}, "the session token is bound to key "+stranger)
	otherApp := claims
	otherApp.App = "other"
	st.refused(t, kp, fleet.SessionHello{App: "bank", Token: signToken(t, otherApp, bank.Seed)}, `the session token is for app \"other\", not bank`)
	// The token expires on the callout's clock.
	st.tokenOffset.Store(int64(2 * time.Minute))
	st.refused(t, kp, fleet.SessionHello{App: "bank", Token: good}, "session token has expired")
	st.tokenOffset.Store(0)
	live, _ := st.mustSession(t, kp, fleet.SessionHello{App: "bank", Token: good})

	// Removing the app refuses its sessions and closes the live one.
	var removed fleet.AppRemoved
	if err := ctlCall(st.admin, fleet.OpAppsRemove, fleet.AppRequest{Name: "bank"}, &removed); err != nil {
		t.Fatal(err)
	}
	if removed.Closed != 1 || len(st.gate.closed) != 1 || st.gate.closed[0] != "bank" {
		t.Fatalf("removed %+v, gate closed %v", removed, st.gate.closed)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !live.IsClosed() {
		if time.Now().After(deadline) {
			t.Fatal("the removed app's live session is still connected")
		}
		time.Sleep(5 * time.Millisecond)
	}
	st.refused(t, kp, fleet.SessionHello{App: "bank", Token: good}, "app bank is not registered")
	// Added again, it has a new key: the old tokens are worthless.
	var again fleet.AppCreated
	if err := ctlCall(st.admin, fleet.OpAppsAdd, fleet.AppRequest{Name: "bank", Functions: []string{"latencyCheck"}}, &again); err != nil {
		t.Fatal(err)
	}
	if again.App.Key == bank.App.Key {
		t.Fatal("the app added again kept its old key")
	}
	st.refused(t, kp, fleet.SessionHello{App: "bank", Token: good}, "not signed by the app's key")
	sess, _ = st.mustSession(t, kp, fleet.SessionHello{App: "bank", Token: signToken(t, claims, again.Seed)})
	sess.Close()

	// The refusals are in the audit, with the key presented and why;
	// the app's removal and addition are registry changes there.
	var refused, changes []fleet.AuditRecord
	waitFor(t, "the session refusals and app changes in the audit", 10*time.Second, func() bool {
		var l fleet.AuditList
		if err := ctlCall(st.admin, fleet.OpAudit, fleet.AuditRequest{Limit: 1000}, &l); err != nil {
			t.Fatal(err)
		}
		refused, changes = nil, nil
		for _, r := range l.Records {
			switch {
			case r.Kind == fleet.AuditRefused && strings.HasPrefix(r.Reason, "session: ") && r.Key == pub && r.Name == "bank":
				refused = append(refused, r)
			case r.Kind == fleet.AuditRegistry && strings.HasPrefix(r.Op, "apps."):
				changes = append(changes, r)
			}
		}
		return len(refused) == 7 && len(changes) == 4
	})
	if !strings.Contains(refused[4].Reason, "session token has expired") || changes[2].Op != fleet.OpAppsRemove || changes[2].Operator != "admin" {
		t.Fatalf("audit: refused %+v, changes %+v", refused, changes)
	}
}

// TestPublicSessionFlood: connections from one address past its burst
// are refused while an agent and an operator from the same address still
// connect, and the app's cap holds for other addresses' sessions too.
func TestPublicSessionFlood(t *testing.T) {
	st := startSessionStack(t, func(c *Config) {
		c.SessionRatePerIP = 0.001 // nothing refills while the test runs
		c.SessionBurstPerIP = 8
	})
	if err := ctlCall(st.admin, fleet.OpAppsAdd, fleet.AppRequest{Name: "speedtest", Functions: []string{"latencyCheck"}, Public: true, MaxSessions: 5}, nil); err != nil {
		t.Fatal(err)
	}
	agentKP, agentPub := newKP(t)
	if _, err := st.svc.reg.AddMachine("10.0.0.5_web01", agentPub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	admitted, capped, limited := 0, 0, 0
	for range 30 {
		kp, _ := newKP(t)
		nc, _, err := st.session(kp, fleet.SessionHello{App: "speedtest"})
		if err == nil {
			admitted++
			t.Cleanup(nc.Close)
		}
	}
	for _, line := range strings.Split(st.log.String(), "\n") {
		if !strings.Contains(line, `msg="connection refused"`) {
			continue // the broker logs the refusals too
		}
		if strings.Contains(line, "its cap (max_sessions 5)") {
			capped++
		}
		if strings.Contains(line, "too many session or WebSocket connections from 127.0.0.1") {
			limited++
		}
	}
	if admitted != 5 {
		t.Fatalf("%d sessions admitted, want the cap of 5", admitted)
	}
	if capped != 3 {
		t.Fatalf("%d refusals for the cap logged, want 3 (8 in the burst, 5 admitted)", capped)
	}
	if limited != 1 {
		t.Fatalf("the flood was logged %d times, want once (22 refusals, one report)", limited)
	}
	if n := st.gate.onlineOf("speedtest"); n != 5 {
		t.Fatalf("%d sessions ONLINE, want 5", n)
	}
	// The machine and the operator are not sessions: not limited.
	agent, err := nats.Connect(st.svc.ClientURL(), nats.Name("10.0.0.5_web01"), nats.Nkey(agentPub, agentKP.Sign), nats.NoReconnect())
	if err != nil {
		t.Fatalf("an agent from the flooding address was refused: %v", err)
	}
	agent.Close()
	kp, err := LoadSeed(st.svc.AdminKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	st.operator(t, kp).Close()
}

// TestViewerSessionsPermission: a viewer without the sessions permission
// may not call a session, read the session snapshot (403) nor watch
// sessions; with it, may.
func TestViewerSessionsPermission(t *testing.T) {
	st := startSessionStack(t, nil)
	for _, tt := range []struct {
		name     string
		sessions bool
	}{{"vera", false}, {"sam", true}} {
		kp, pub := newKP(t)
		if err := ctlCall(st.admin, fleet.OpOperatorsAdd, fleet.OperatorRequest{Name: tt.name, Key: pub, Role: fleet.RoleViewer, Sessions: tt.sessions}, nil); err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 16)
		nc := st.operator(t, kp, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
		check := func(what string) {
			t.Helper()
			if tt.sessions {
				noViolation(t, nc, errs, tt.name+" "+what)
			} else {
				violation(t, errs, tt.name+" "+what)
			}
		}
		if err := nc.Publish(fleet.SessionFnSubject(fleet.SessionID("speedtest", pub), "latencyCheck", pub), nil); err != nil {
			t.Fatal(err)
		}
		check("calls a session")
		// The session snapshot is asked on the operator's own control
		// subject (any operator may publish there) and answered only
		// to one that may see sessions.
		_, refused := askSessionSnapshot(t, nc, pub)
		if tt.sessions && refused != "" || !tt.sessions && !strings.Contains(refused, "403 operator vera may not see sessions: an admin grants it with cc-bench operators add vera --sessions") {
			t.Fatalf("%s reads the session snapshot: refused %q", tt.name, refused)
		}
		if _, err := nc.SubscribeSync(fleet.SessionEventsWildcard); err != nil {
			t.Fatal(err)
		}
		check("watches sessions")
	}
}

// sessionFrom connects as a session holding kp with hello h from local
// address ip (a loopback address: 127.0.0.0/8 is all this host's).
func (st *sessionStack) sessionFrom(ip string, kp nkeys.KeyPair, h fleet.SessionHello) (*nats.Conn, error) {
	pub, _ := kp.PublicKey()
	b, _ := json.Marshal(h)
	return nats.Connect(st.svc.ClientURL(), nats.Token(string(b)), nats.Nkey(pub, kp.Sign), nats.NoReconnect(), nats.Timeout(5*time.Second),
		nats.SetCustomDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}))
}

// TestPublicSessionCapPerAddress: one address cannot fill a public app's
// cap and keep it. With the rate limit out of the way (as a patient
// attacker gets around it within a credential's lifetime), 127.0.0.1
// holds at most --max-sessions-per-address sessions of the public app;
// its next is refused saying which flag sets it, while 127.0.0.2 still
// gets in; one of 127.0.0.1's leaving makes room for one more. A signed
// app's sessions (its backend vouches for each) are not capped by
// address.
func TestPublicSessionCapPerAddress(t *testing.T) {
	st := startSessionStack(t, func(c *Config) {
		c.SessionRatePerIP = -1 // no rate limit: only the caps count
		c.MaxSessionsPerIP = 3
	})
	if err := ctlCall(st.admin, fleet.OpAppsAdd, fleet.AppRequest{Name: "speedtest", Functions: []string{"latencyCheck"}, Public: true, MaxSessions: 60}, nil); err != nil {
		t.Fatal(err)
	}
	var held []*nats.Conn
	for i := range 3 {
		kp, _ := newKP(t)
		nc, err := st.sessionFrom("127.0.0.1", kp, fleet.SessionHello{App: "speedtest"})
		if err != nil {
			t.Fatalf("session %d from 127.0.0.1 refused under the cap of 3: %v", i+1, err)
		}
		t.Cleanup(nc.Close)
		held = append(held, nc)
	}
	kp, _ := newKP(t)
	st.refused(t, kp, fleet.SessionHello{App: "speedtest"}, "app speedtest has 3 sessions ONLINE from 127.0.0.1, the most one address may hold (cc-control --max-sessions-per-address 3)")
	visitor, err := st.sessionFrom("127.0.0.2", kp, fleet.SessionHello{App: "speedtest"})
	if err != nil {
		t.Fatalf("a visitor from 127.0.0.2 refused while 127.0.0.1 holds its 3: %v", err)
	}
	visitor.Close()

	// One of 127.0.0.1's leaves: once presence has seen it go, there is
	// room for one more.
	held[0].Close()
	waitFor(t, "127.0.0.1's first session gone", 10*time.Second, func() bool { return st.gate.onlineFrom("speedtest", "127.0.0.1") < 3 })
	kp, _ = newKP(t)
	nc, err := st.sessionFrom("127.0.0.1", kp, fleet.SessionHello{App: "speedtest"})
	if err != nil {
		t.Fatalf("a session from 127.0.0.1 after one of its 3 left: %v", err)
	}
	nc.Close()

	// A signed app: every session presents its backend's token, none is
	// capped by address.
	var bank fleet.AppCreated
	if err := ctlCall(st.admin, fleet.OpAppsAdd, fleet.AppRequest{Name: "bank", Functions: []string{"latencyCheck"}}, &bank); err != nil {
		t.Fatal(err)
	}
	now := st.svc.cfg.Now()
	for i := range 5 {
		kp, pub := newKP(t)
		tok := signToken(t, fleet.SessionTokenClaims{App: "bank", Subject: fmt.Sprintf("user-%d", i), IssuedAt: now.Unix(), Expires: now.Add(time.Minute).Unix(), Key: pub}, bank.Seed)
		nc, err := st.sessionFrom("127.0.0.1", kp, fleet.SessionHello{App: "bank", Token: tok})
		if err != nil {
			t.Fatalf("signed session %d from 127.0.0.1 refused: %v", i+1, err)
		}
		t.Cleanup(nc.Close)
	}
}

// askSessionSnapshot asks for the session snapshot on key's own control
// subject, as the operator on nc, and returns the first part, or the
// refusal ("code text").
func askSessionSnapshot(t *testing.T, nc *nats.Conn, key string) (fleet.SessionSnapshot, string) {
	t.Helper()
	var snap fleet.SessionSnapshot
	m, err := nc.Request(fleet.CtlSubject(key, fleet.OpSessionsSnapshot), []byte("{}"), 5*time.Second)
	if err != nil {
		t.Fatalf("session snapshot on %s: %v", fleet.CtlSubject(key, fleet.OpSessionsSnapshot), err)
	}
	if code := m.Header.Get(fleet.HeaderErrorCode); code != "" {
		return snap, code + " " + m.Header.Get(fleet.HeaderError)
	}
	if err := json.Unmarshal(m.Data, &snap); err != nil {
		t.Fatalf("session snapshot reply: %v", err)
	}
	return snap, ""
}

// TestSessionSnapshotBudgetIsTheSenders: an operator with the sessions
// permission cannot spend another operator's session snapshot budget.
// The snapshot is asked on the asker's own control subject, which the
// broker lets only that operator publish; it is answered only into the
// asker's own control inbox, within the asker's own limit. Eve's 200
// requests naming the admin's inbox on her own subject are not answered
// and cost the admin nothing; she may not publish on the admin's subject,
// nor on the shared subject the snapshot was once asked on; her own
// requests past her burst are refused (429) while the admin's are still
// answered.
func TestSessionSnapshotBudgetIsTheSenders(t *testing.T) {
	st := startSessionStack(t, func(c *Config) {
		c.SnapshotRate = 0.001 // nothing refills while the test runs
		c.SnapshotBurst = 2
	})
	ekp, epub := newKP(t)
	if err := ctlCall(st.admin, fleet.OpOperatorsAdd, fleet.OperatorRequest{Name: "eve", Key: epub, Role: fleet.RoleViewer, Sessions: true}, nil); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16)
	eve := st.operator(t, ekp, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	adminKey := st.admin.Opts.Nkey
	adminInbox := fleet.ControlInbox(adminKey)
	if err := eve.PublishRequest(fleet.CtlSubject(adminKey, fleet.OpSessionsSnapshot), adminInbox+".x", nil); err != nil {
		t.Fatal(err)
	}
	violation(t, errs, "eve asks on the admin's subject")
	if err := eve.PublishRequest("sys.commandControl.presence.sessions", adminInbox+".y", nil); err != nil {
		t.Fatal(err)
	}
	violation(t, errs, "eve asks on the old shared subject")
	for i := range 200 {
		if err := eve.PublishRequest(fleet.CtlSubject(epub, fleet.OpSessionsSnapshot), fmt.Sprintf("%s.x%d", adminInbox, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	// Her own requests are served after those, in order: once the first
	// is answered, all 200 were handled.
	for i := range 2 {
		if _, refused := askSessionSnapshot(t, eve, epub); refused != "" {
			t.Fatalf("eve's own request %d, within her burst of 2: refused %s", i+1, refused)
		}
	}
	if _, refused := askSessionSnapshot(t, eve, epub); !strings.HasPrefix(refused, "429 ") {
		t.Fatalf("eve's third request, past her burst: got %q, want a 429", refused)
	}
	for i := range 2 {
		if _, refused := askSessionSnapshot(t, st.admin, adminKey); refused != "" {
			t.Fatalf("the admin's own request %d after eve's flood: refused %s", i+1, refused)
		}
	}
}
