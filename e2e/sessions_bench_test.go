// These end-to-end tests run the workbench side of sessions (issue #13)
// against the whole stack: the real broker and callout admitting sessions
// (apps, public and signed), session presence with locations, and the
// bench SDK listing, watching and calling sessions.
//
// A session here is what the contract says one is: a NATS connection
// with its own fresh user nkey (signature over the nonce) and, as its
// auth token, a fleet.SessionHello in JSON; it subscribes to
// fleet.SessionFnWildcard(id, fn) and answers on the reply subject,
// echoing Cc-Call and Cc-Args.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"reflect"
	"sort"
	"strings"
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

// Loopback addresses stand for two cities (as an operator's --sites map
// would place private networks).
const (
	nbAddr     = "127.0.0.1"
	newarkAddr = "127.0.0.2"
)

var (
	newBrunswick = fleet.Location{City: "New Brunswick", Region: "New Jersey", Country: "United States", CountryCode: "US", Source: fleet.LocationFromSites}
	newark       = fleet.Location{City: "Newark", Region: "New Jersey", Country: "United States", CountryCode: "US", Source: fleet.LocationFromSites}
)

func startSessionControl(t *testing.T) *controlsvc.Service {
	t.Helper()
	return stacktest.StartControlWith(t, controlsvc.Config{
		DataDir: t.TempDir(),
		Broker:  broker.Config{Listen: "127.0.0.1:0", PingInterval: time.Second, MaxPingsOut: 2},
		Logger:  stacktest.Logger().With("side", "control"),
		Locate:  sitesLocate,
	})
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// testSession is one session connection.
type testSession struct {
	id  string
	nc  *nats.Conn
	key string
}

// joinSession connects a session of app from local address from, with
// token (signed apps), exposing fn with answer (nil: silent). It does not
// wait for presence.
func joinSession(t *testing.T, url, app, token, from, fn string, answer func(args map[string]any) any) (*testSession, error) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	hello, _ := json.Marshal(fleet.SessionHello{App: app, Token: token, Platform: fleet.PlatformBrowser, UserAgent: "e2e", AppVersion: "1"})
	nc, err := nats.Connect(url, nats.Name("session e2e"), nats.Token(string(hello)), nats.Nkey(pub, kp.Sign),
		nats.Timeout(5*time.Second), nats.NoReconnect(),
		nats.SetCustomDialer(&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}))
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	s := &testSession{id: fleet.SessionID(app, pub), nc: nc, key: pub}
	_, err = nc.Subscribe(fleet.SessionFnWildcard(s.id, fn), func(m *nats.Msg) {
		if answer == nil {
			return
		}
		var args map[string]any
		_ = json.Unmarshal(m.Data, &args)
		out := &nats.Msg{Subject: m.Reply, Header: nats.Header{}}
		out.Header.Set(fleet.HeaderCallID, m.Header.Get(fleet.HeaderCallID))
		out.Header.Set(fleet.HeaderArgs, fleet.ArgsDigest(m.Data))
		out.Header.Set(fleet.HeaderFunction, fn)
		out.Data, _ = json.Marshal(answer(args))
		_ = nc.PublishMsg(out)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return s, nil
}

func mustJoin(t *testing.T, url, app, token, from, fn string, answer func(map[string]any) any) *testSession {
	t.Helper()
	s, err := joinSession(t, url, app, token, from, fn, answer)
	if err != nil {
		t.Fatalf("session of %s from %s: %v", app, from, err)
	}
	return s
}

// awaitSessions polls the workbench's session listing until it holds
// exactly ids (the control service's presence has caught up).
func awaitSessions(t *testing.T, c *bench.Client, q fleet.SessionQuery, ids ...string) []fleet.Session {
	t.Helper()
	sort.Strings(ids)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ss, err := c.Sessions(ctxFor(t), q)
		var got []string
		for _, s := range ss {
			got = append(got, s.ID)
		}
		if err == nil && reflect.DeepEqual(got, ids) || err == nil && len(got) == 0 && len(ids) == 0 {
			return ss
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions %v (err %v), want %v", got, err, ids)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
}

func latency(args map[string]any) any { return map[string]any{"url": args["url"], "median_ms": 3} }

// TestSessionsBenchCallByLocation: a public app's sessions in two cities;
// the workbench lists those of one city with their attributes and calls
// latencyCheck on exactly them.
func TestSessionsBenchCallByLocation(t *testing.T) {
	svc := startSessionControl(t)
	c := adminClient(t, svc)
	ctx := ctxFor(t)
	created, err := c.AppsAdd(ctx, fleet.AppRequest{Name: "demo", Functions: []string{"latencyCheck"}, Public: true, MaxSessions: 10})
	if err != nil {
		t.Fatal(err)
	}
	if created.Seed != "" || created.App.Admission != fleet.AdmissionPublic {
		t.Errorf("public app created as %+v (seed %q)", created.App, created.Seed)
	}
	url := svc.ClientURL()
	nb1 := mustJoin(t, url, "demo", "", nbAddr, "latencyCheck", latency)
	nb2 := mustJoin(t, url, "demo", "", nbAddr, "latencyCheck", latency)
	nwk := mustJoin(t, url, "demo", "", newarkAddr, "latencyCheck", latency)
	awaitSessions(t, c, fleet.SessionQuery{}, nb1.id, nb2.id, nwk.id)

	where := fleet.SessionQuery{Where: map[string]string{"city": "New Brunswick", "region": "New Jersey"}}
	ss := awaitSessions(t, c, where, nb1.id, nb2.id)
	for _, s := range ss {
		if s.App != "demo" || s.Admission != fleet.AdmissionPublic || s.IP != nbAddr || s.Location == nil ||
			s.Location.City != "New Brunswick" || s.Declared.Platform != fleet.PlatformBrowser {
			t.Errorf("session %+v: want app demo, public, ip %s, New Brunswick, declared browser", s, nbAddr)
		}
	}
	apps, err := c.AppsList(ctx)
	if err != nil || len(apps) != 1 || apps[0].Name != "demo" || apps[0].Online != 3 {
		t.Errorf("apps %+v, %v; want demo with 3 online", apps, err)
	}

	res, err := c.Call(ctx, "latencyCheck", map[string]any{"url": "https://example.test/"}, bench.CallOptions{Sessions: &where, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Expected != 2 || !res.AllOK() || res.TimedOut || len(res.Unexpected) != 0 {
		t.Errorf("call %+v; want 2 ok, ended at the last reply", res.Summary)
	}
	for _, r := range res.Replied {
		if r.Session != nb1.id && r.Session != nb2.id || r.App != "demo" || r.Location == nil || r.Location.City != "New Brunswick" ||
			!strings.Contains(string(r.Result), "example.test") {
			t.Errorf("reply %+v", r)
		}
	}
}

// TestSessionsBenchSignedApp: a signed app's key is shown once; a token
// signed with it admits a session that lists with its user; the app's
// removal closes it.
func TestSessionsBenchSignedApp(t *testing.T) {
	svc := startSessionControl(t)
	c := adminClient(t, svc)
	ctx := ctxFor(t)
	created, err := c.AppsAdd(ctx, fleet.AppRequest{Name: "shop", Functions: []string{"latencyCheck"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.Seed, "SA") || !strings.HasPrefix(created.App.Key, "A") || created.App.Admission != fleet.AdmissionSigned {
		t.Fatalf("signed app created as %+v, seed %.4q…", created.App, created.Seed)
	}
	now := time.Now()
	tok, err := fleet.SignSessionToken(fleet.SessionTokenClaims{App: "shop", Subject: "alice", IssuedAt: now.Unix(),
		Expires: now.Add(10 * time.Minute).Unix(), Claims: map[string]string{"plan": "pro"}}, []byte(created.Seed))
	if err != nil {
		t.Fatal(err)
	}
	s := mustJoin(t, svc.ClientURL(), "shop", tok, nbAddr, "latencyCheck", latency)
	ss := awaitSessions(t, c, fleet.SessionQuery{Where: map[string]string{"user": "alice"}}, s.id)
	if ss[0].Admission != fleet.AdmissionSigned || ss[0].Claims["plan"] != "pro" {
		t.Errorf("signed session %+v", ss[0])
	}
	if _, err := joinSession(t, svc.ClientURL(), "shop", "", nbAddr, "latencyCheck", latency); err == nil {
		t.Errorf("a session of a signed app joined without a token")
	}

	removed, err := c.AppsRemove(ctx, "shop")
	if err != nil || removed.Closed != 1 {
		t.Errorf("apps rm: %+v, %v; want 1 session closed", removed, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.nc.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s.nc.IsConnected() {
		t.Errorf("the removed app's session is still connected")
	}
	awaitSessions(t, c, fleet.SessionQuery{})
}

// TestSessionsBenchWatch: a session watch lists the ONLINE sessions, then
// one joining and one leaving.
func TestSessionsBenchWatch(t *testing.T) {
	svc := startSessionControl(t)
	c := adminClient(t, svc)
	if _, err := c.AppsAdd(ctxFor(t), fleet.AppRequest{Name: "demo", Functions: []string{"latencyCheck"}, Public: true}); err != nil {
		t.Fatal(err)
	}
	url := svc.ClientURL()
	first := mustJoin(t, url, "demo", "", nbAddr, "latencyCheck", latency)
	awaitSessions(t, c, fleet.SessionQuery{}, first.id)

	ctx, cancel := context.WithCancel(ctxFor(t))
	var got []string
	var second *testSession
	err := c.WatchSessions(ctx, func(ev fleet.SessionEvent) {
		got = append(got, ev.Event+" "+ev.Session.ID)
		switch {
		case ev.Event == bench.EventSynced && second == nil:
			second = mustJoin(t, url, "demo", "", newarkAddr, "latencyCheck", latency)
		case ev.Event == fleet.EventJoined:
			if ev.Session.Location == nil || ev.Session.Location.City != "Newark" {
				t.Errorf("joined %+v: want its location", ev.Session)
			}
			first.nc.Close()
		case ev.Event == fleet.EventLeft:
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("WatchSessions: %v", err)
	}
	want := []string{"present " + first.id, "synced ", "joined " + second.id, "left " + first.id}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
}

// TestSessionsBenchViewerPermission: a viewer may not list or call
// sessions; a viewer added with the sessions permission may.
func TestSessionsBenchViewerPermission(t *testing.T) {
	svc := startSessionControl(t)
	admin := adminClient(t, svc)
	ctx := ctxFor(t)
	if _, err := admin.AppsAdd(ctx, fleet.AppRequest{Name: "demo", Functions: []string{"latencyCheck"}, Public: true}); err != nil {
		t.Fatal(err)
	}
	s := mustJoin(t, svc.ClientURL(), "demo", "", nbAddr, "latencyCheck", latency)
	awaitSessions(t, admin, fleet.SessionQuery{}, s.id)

	viewerPath := newOperator(t, svc, "viewer2", fleet.RoleViewer)
	v, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(viewerPath))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if ss, err := v.Sessions(short, fleet.SessionQuery{}); err == nil {
		t.Errorf("a viewer listed sessions: %v", ss)
	}
	if _, err := v.Call(short, "latencyCheck", nil, bench.CallOptions{Sessions: &fleet.SessionQuery{}, Timeout: 2 * time.Second}); err == nil {
		t.Errorf("a viewer called sessions")
	}

	kp := stacktest.NewKey(t)
	pub, _ := kp.PublicKey()
	op, err := admin.AddOperatorWith(ctx, fleet.OperatorRequest{Name: "noc", Key: pub, Role: fleet.RoleViewer, Sessions: true})
	if err != nil || op == nil || !op.Sessions {
		t.Fatalf("add viewer with sessions: %+v, %v", op, err)
	}
	seed, _ := kp.Seed()
	noc, err := bench.Connect(svc.ClientURL(), bench.WithSeed(seed))
	if err != nil {
		t.Fatal(err)
	}
	defer noc.Close()
	awaitSessions(t, noc, fleet.SessionQuery{}, s.id)
	res, err := noc.Call(ctx, "latencyCheck", map[string]any{"url": "https://example.test/"}, bench.CallOptions{Sessions: &fleet.SessionQuery{}, Timeout: 10 * time.Second})
	if err != nil || !res.AllOK() || res.Expected != 1 {
		t.Errorf("viewer with sessions: %+v, %v", res, err)
	}
}
