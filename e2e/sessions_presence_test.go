package e2e

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/nats-io/nuid"
)

// A real session, through the real callout: its connection (user
// "session:<id>") makes it ONLINE with joined on the session events (a
// machine watcher sees nothing), in the session snapshot with the address
// its broker saw; a call to it is answered by it and audited; a call to
// an offline session is answered "no responders" at once; apps.rm closes
// it (left).
func TestSessionPresenceEndToEnd(t *testing.T) {
	svc := startControl(t, "")
	adminKP, _ := nkeys.FromSeed(stacktest.AdminSeed(t, svc))
	admin := stacktest.Connect(t, svc.ClientURL(), adminKP, "admin")
	adminKey := stacktest.Pub(t, adminKP)
	ctl := func(op string, req, out any) {
		t.Helper()
		b, _ := json.Marshal(req)
		m, err := admin.Request(fleet.CtlSubject(adminKey, op), b, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		if e := m.Header.Get(fleet.HeaderError); e != "" {
			t.Fatalf("%s: %s", op, e)
		}
		if out != nil {
			if err := json.Unmarshal(m.Data, out); err != nil {
				t.Fatalf("%s: %v", op, err)
			}
		}
	}
	ctl(fleet.OpAppsAdd, fleet.AppRequest{Name: "demo", Functions: []string{"latencyCheck"}, Public: true}, nil)

	sessEvents, err := admin.SubscribeSync(fleet.SessionEventsWildcard)
	if err != nil {
		t.Fatal(err)
	}
	machineEvents, err := admin.SubscribeSync(fleet.PresenceEventsWildcard)
	if err != nil {
		t.Fatal(err)
	}
	_ = admin.Flush()

	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	id := fleet.SessionID("demo", pub)
	hello, _ := json.Marshal(fleet.SessionHello{App: "demo", Platform: fleet.PlatformDevice, UserAgent: "e2e"})
	sess, err := nats.Connect(svc.ClientURL(), nats.Nkey(pub, kp.Sign), nats.Token(string(hello)), nats.Name("session"), nats.NoReconnect())
	if err != nil {
		t.Fatalf("session connect: %v", err)
	}
	defer sess.Close()
	if _, err := sess.Subscribe(fleet.SessionFnWildcard(id, "latencyCheck"), func(m *nats.Msg) {
		r := nats.NewMsg(m.Reply)
		r.Header.Set(fleet.HeaderCallID, m.Header.Get(fleet.HeaderCallID))
		r.Header.Set(fleet.HeaderArgs, fleet.ArgsDigest(m.Data))
		r.Data = []byte(`{"ms":1}`)
		_ = m.RespondMsg(r)
	}); err != nil {
		t.Fatal(err)
	}
	_ = sess.Flush()

	m, err := sessEvents.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no joined: %v", err)
	}
	var ev fleet.SessionEvent
	_ = json.Unmarshal(m.Data, &ev)
	if ev.Event != fleet.EventJoined || ev.Session.ID != id || ev.Session.App != "demo" || ev.Session.IP != "127.0.0.1" || ev.Session.Declared.UserAgent != "e2e" {
		t.Fatalf("joined: %+v", ev)
	}

	// The snapshot lists it.
	b, _ := json.Marshal(fleet.SessionQuery{Where: map[string]string{"app": "demo"}})
	m, err = admin.Request(fleet.CtlSubject(adminKey, fleet.OpSessionsSnapshot), b, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var snap fleet.SessionSnapshot
	if err := json.Unmarshal(m.Data, &snap); err != nil || snap.Total != 1 || snap.Sessions[0].ID != id || snap.Seq != ev.Seq {
		t.Fatalf("snapshot %+v (%v), want the one session at seq %d", snap, err, ev.Seq)
	}

	// A call to it: answered by the session; one to an offline session:
	// no responders at once.
	call := func(target string) (*nats.Msg, error) {
		tok := nuid.Next()
		reply := fleet.CallReply(adminKey, target, tok, 0)
		sub, err := admin.SubscribeSync(reply)
		if err != nil {
			return nil, err
		}
		defer sub.Unsubscribe()
		req := nats.NewMsg(fleet.SessionFnSubject(target, "latencyCheck", adminKey))
		req.Reply, req.Data = reply, []byte(`{}`)
		req.Header.Set(fleet.HeaderCallID, tok)
		if err := admin.PublishMsg(req); err != nil {
			return nil, err
		}
		r, err := sub.NextMsg(5 * time.Second)
		if err == nil && fleet.IsNoResponders(r.Header.Get(fleet.HeaderStatus), len(r.Data)) {
			return nil, nats.ErrNoResponders
		}
		return r, err
	}
	if r, err := call(id); err != nil || string(r.Data) != `{"ms":1}` {
		t.Fatalf("call to the session: %v", err)
	}
	if _, err := call(fleet.SessionID("demo", "UNOBODY")); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("call to an offline session: %v, want no responders", err)
	}

	// apps.rm closes it: left, and its connection is gone.
	var removed fleet.AppRemoved
	ctl(fleet.OpAppsRemove, fleet.AppRequest{Name: "demo"}, &removed)
	if removed.Closed != 1 {
		t.Errorf("apps.rm closed %d sessions, want 1", removed.Closed)
	}
	if m, err = sessEvents.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("no left: %v", err)
	}
	_ = json.Unmarshal(m.Data, &ev)
	if ev.Event != fleet.EventLeft || ev.Session.ID != id {
		t.Fatalf("left: %+v", ev)
	}
	stacktest.WaitFor(t, "the session's connection closed", 5*time.Second, sess.IsClosed)
	if n, _, _ := machineEvents.Pending(); n != 0 {
		t.Errorf("a machine watcher got %d events of a session", n)
	}
}
