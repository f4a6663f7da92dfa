package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Issue #11, finding 2: a compromised site broker can affect only its own
// site. The compromised site here is a plain nats-server holding the real
// site secret, linked to the hub for the three accounts exactly as a site
// broker is, but with no auth callout and no permissions of its own: a
// client there can publish and subscribe to anything in the site's SYS,
// CONTROL and FLEET accounts, which is what whoever controls a site broker
// can do.

// rogueSite is a compromised site broker and a client in each account.
type rogueSite struct {
	srv            *server.Server
	sys, ctl, flee *nats.Conn
}

// startRogueSite starts a plain nats-server linked to the hub's leaf port
// as site with secret, and connects a client in each of its accounts.
func startRogueSite(t *testing.T, leafPort int, site, secret string) *rogueSite {
	t.Helper()
	return startRogueSiteWith(t, leafPort, site, secret, broker.SystemAccount)
}

// startRogueSiteWith is startRogueSite with sysAccount as the server's
// system account: broker.SystemAccount makes it behave like a site broker,
// anything else makes its SYS an ordinary account that only the
// attacker's client answers in.
func startRogueSiteWith(t *testing.T, leafPort int, site, secret, sysAccount string) *rogueSite {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, ServerName: "rogue-" + site, NoSigs: true, NoLog: true,
		SystemAccount: sysAccount}
	if sysAccount != broker.SystemAccount {
		opts.Accounts = append(opts.Accounts, server.NewAccount(sysAccount))
	}
	for _, name := range []string{broker.SystemAccount, broker.ControlAccount, broker.FleetAccount} {
		a := server.NewAccount(name)
		opts.Accounts = append(opts.Accounts, a)
		opts.Users = append(opts.Users, &server.User{Username: strings.ToLower(name), Password: "x", Account: a})
		u, err := url.Parse("nats-leaf://127.0.0.1:" + itoa(leafPort))
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(broker.LeafUser(site, name), secret)
		opts.LeafNode.Remotes = append(opts.LeafNode.Remotes, &server.RemoteLeafOpts{LocalAccount: name, URLs: []*url.URL{u}})
	}
	opts.LeafNode.ReconnectInterval = 200 * time.Millisecond
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("rogue site broker not ready")
	}
	t.Cleanup(srv.Shutdown)
	r := &rogueSite{srv: srv}
	for name, c := range map[string]**nats.Conn{"sys": &r.sys, "control": &r.ctl, "fleet": &r.flee} {
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(name, "x"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		*c = nc
	}
	stacktest.WaitFor(t, "the rogue site linked for all three accounts", 15*time.Second, func() bool { return srv.NumLeafNodes() == 3 })
	return r
}

// confinedFixture is a hub with a control service that accepts sites dc2
// and dc3, a machine at the hub, a real site dc3 with a machine, a machine
// registered to dc3 that never starts, and an admin at the hub.
type confinedFixture struct {
	hub      *broker.Broker
	svc      *controlsvc.Service
	leafPort int
	admin    string // seed file
	adminKey string
	hq       string
	never    string
	neverKey string
}

func newConfinedFixture(t *testing.T) *confinedFixture {
	t.Helper()
	dir := t.TempDir()
	hub, auth, leafPort, ls := startLeafHub(t, dir, leafSecret, "dc2", "dc3")
	f := &confinedFixture{hub: hub, leafPort: leafPort, hq: "10.5.0.1_hq", never: "10.5.3.9_dc3-never"}
	f.svc = controlBehindSites(t, dir, hub.ClientURL(), time.Minute, ls)
	dc3 := startSiteBroker(t, auth, leafPort, "dc3", leafSecret, "site-dc3")
	waitLinked(t, dc3)
	startSiteAgent(t, f.svc, hub.ClientURL(), f.hq, "")
	startSiteAgent(t, f.svc, dc3.ClientURL(), "10.5.3.1_dc3-app", "dc3")
	kp, _ := nkeys.CreateUser()
	f.neverKey, _ = kp.PublicKey()
	if _, err := f.svc.Registry().SetMachineAt(f.never, f.neverKey, "dc3", nil, "test", false); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{f.hq, "10.5.3.1_dc3-app"} {
		stacktest.WaitFor(t, id+" ONLINE", 10*time.Second, func() bool { return stacktest.Online(f.svc, id) })
	}
	f.admin = newOperator(t, f.svc, "ops", "admin")
	f.adminKey, _ = stacktest.LoadKey(t, f.admin).PublicKey()
	return f
}

// TestLeafSiteSysConfined: from the compromised site's SYS account no
// request reaches the hub's brokers (their connection lists, KICK of the
// control service's own connections), and its events speak only for its
// own site: a forged SHUTDOWN of the hub's broker drops nothing at the
// hub, and a forged connect of a machine registered to another site does
// not make it ONLINE (the control service closes it at the claiming site
// instead, which is what the test waits for).
func TestLeafSiteSysConfined(t *testing.T) {
	f := newConfinedFixture(t)
	rogue := startRogueSite(t, f.leafPort, "dc2", leafSecret)
	hubID := f.hub.ID()

	// The hub's connection lists and KICK: nothing at the hub answers.
	for _, verb := range []string{"CONNZ", "KICK"} {
		body := `{"acc":"FLEET","auth":true}`
		if verb == "KICK" {
			body = `{"cid":1}`
		}
		m, err := rogue.sys.Request("$SYS.REQ.SERVER."+hubID+"."+verb, []byte(body), 3*time.Second)
		if !errors.Is(err, nats.ErrNoResponders) {
			t.Fatalf("%s of the hub's broker from the site: got %v (%s), want no responders", verb, err, msgData(m))
		}
	}

	// Forged events, in order: the hub's broker shut down, then a machine
	// of site dc3 (never started) connected "at the hub's broker".
	kicks, err := rogue.sys.SubscribeSync("$SYS.REQ.SERVER.*.KICK")
	if err != nil {
		t.Fatal(err)
	}
	if err := rogue.sys.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := rogue.sys.Publish("$SYS.SERVER."+hubID+".SHUTDOWN", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	ev, _ := json.Marshal(map[string]any{
		"server": map[string]any{"id": hubID},
		"client": map[string]any{"id": 4242, "user": "agent:" + f.never, "name": f.never, "tags": []string{"key:" + f.neverKey}},
	})
	forge := func() error { return rogue.sys.Publish("$SYS.ACCOUNT.FLEET.CONNECT", ev) }
	// The site's subscriptions may still be crossing the link: repeat the
	// forged connect until the control service answers it with a KICK at
	// the site (events are handled in order, so the SHUTDOWN before it
	// was handled too).
	var kick *nats.Msg
	stacktest.WaitFor(t, "the forged connect refused (closed at the claiming site)", 10*time.Second, func() bool {
		if err := forge(); err != nil {
			t.Fatal(err)
		}
		kick, _ = kicks.NextMsg(300 * time.Millisecond)
		return kick != nil
	})
	if !strings.Contains(string(kick.Data), "4242") {
		t.Fatalf("kick at the site: %s %s", kick.Subject, kick.Data)
	}
	if stacktest.Online(f.svc, f.never) {
		t.Fatalf("machine %s of site dc3 shows ONLINE on site dc2's word", f.never)
	}
	if !stacktest.Online(f.svc, f.hq) {
		t.Fatalf("the hub's machine %s dropped from ONLINE on a SHUTDOWN forged by site dc2", f.hq)
	}
}

// TestLeafSiteControlConfined: from the compromised site's CONTROL
// account there is no JetStream API (no audit read) and no audit subject
// (no forged record), and it neither joins the callout queue nor sees the
// hub's callout requests: operators keep logging in at the hub.
func TestLeafSiteControlConfined(t *testing.T) {
	f := newConfinedFixture(t)
	rogue := startRogueSite(t, f.leafPort, "dc2", leafSecret)

	if m, err := rogue.ctl.Request("$JS.API.STREAM.INFO."+controlsvc.AuditRefusedStream, nil, 3*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("audit stream info from the site: got %v (%s), want no responders", err, msgData(m))
	}
	if m, err := rogue.ctl.Request("$JS.API.STREAM.MSG.GET."+controlsvc.AuditStream, []byte(`{"seq":1}`), 3*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("audit record read from the site: got %v (%s), want no responders", err, msgData(m))
	}
	forged, _ := json.Marshal(fleet.AuditRecord{Time: time.Now().UTC(), Kind: fleet.AuditRegistry, Operator: "admin", Op: fleet.OpOperatorsAdd})
	if m, err := rogue.ctl.Request(controlsvc.AuditSubjectPrefix+fleet.AuditLogChanges+".forged", forged, 3*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("forged audit record from the site: got %v (%s), want no responders", err, msgData(m))
	}

	// Live audit records: subscribe to them, get one written (a refused
	// callout request the site sends itself), and once it is stored ask
	// again. The control service writes records and answers the callout
	// on one connection, so a record the site could see would reach it
	// before that second answer.
	records, err := rogue.ctl.SubscribeSync(controlsvc.AuditSubjectPrefix + ">")
	if err != nil {
		t.Fatal(err)
	}
	if err := rogue.ctl.Flush(); err != nil {
		t.Fatal(err)
	}
	admin, err := bench.Connect(f.hub.ClientURL(), bench.WithSeedFile(f.admin))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := rogue.ctl.Request(controlsvc.AuthCalloutSubject, authRequest(t, "rogue", "live-audit-probe", "127.0.0.1", nil), 5*time.Second); err != nil {
		t.Fatalf("the site's own callout request: %v", err)
	}
	stacktest.WaitFor(t, "the probe's refusal audited", 10*time.Second, func() bool {
		recs, err := admin.Audit(context.Background(), time.Time{}, 0, fleet.AuditLogRefused)
		if err != nil {
			return false
		}
		for _, r := range recs {
			if r.Name == "live-audit-probe" {
				return true
			}
		}
		return false
	})
	if _, err := rogue.ctl.Request(controlsvc.AuthCalloutSubject, authRequest(t, "rogue", "marker", "127.0.0.1", nil), 5*time.Second); err != nil {
		t.Fatalf("the site's own callout request: %v", err)
	}
	if m, err := records.NextMsg(0); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("the site read a live audit record: %s %s", m.Subject, m.Data)
	}

	// The callout queue and everything else in CONTROL.
	queue, err := rogue.ctl.QueueSubscribeSync(controlsvc.AuthCalloutSubject, "cc-control")
	if err != nil {
		t.Fatal(err)
	}
	all, err := rogue.ctl.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	if err := rogue.ctl.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		start := time.Now()
		nc, err := connectAs(f.hub.ClientURL(), stacktest.LoadKey(t, f.admin), "op")
		if err != nil {
			t.Fatalf("admin login %d at the hub with the site's queue member: %v", i, err)
		}
		nc.Close()
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("admin login %d took %v", i, d)
		}
	}
	for name, sub := range map[string]*nats.Subscription{"queue member": queue, "wildcard": all} {
		if m, err := sub.NextMsg(0); err == nil || !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("the site's %s saw a callout request of the hub: %v %s", name, err, msgData(m))
		}
	}
}

// TestLeafSiteFleetConfined: from the compromised site's FLEET account
// nothing that an operator at the hub could not see from the site's own
// machines: it does not see the hub admin's calls to the hub's machines
// (nor their replies), and it cannot publish control requests (operators.add
// as the admin), calls to the hub's machines, presence events, the agents'
// hint, or replies in a hub machine's name: the hub closes the link at the
// first such message (and drops it).
func TestLeafSiteFleetConfined(t *testing.T) {
	f := newConfinedFixture(t)
	nc := operatorConn(t, f.hub.ClientURL(), f.admin)

	t.Run("watch calls", func(t *testing.T) {
		rogue := startRogueSite(t, f.leafPort, "dc2", leafSecret)
		defer rogue.srv.Shutdown()
		seen, err := rogue.flee.SubscribeSync(">")
		if err != nil {
			t.Fatal(err)
		}
		if err := rogue.flee.Flush(); err != nil {
			t.Fatal(err)
		}
		// Broadcasts do reach the site (its machines answer them): wait
		// until one arrives, so the site's subscription is at the hub.
		stacktest.WaitFor(t, "a broadcast to reach the site", 10*time.Second, func() bool {
			sub, err := stacktest.Broadcast(nc, "current-load", []byte("{}"))
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			for {
				m, err := seen.NextMsg(300 * time.Millisecond)
				if err != nil {
					return false
				}
				if isBroadcastCall(m.Subject) {
					return true
				}
			}
		})
		drain(seen)
		callLoad(t, nc, f.hq, "the admin's call to the hub's machine")
		// A last broadcast marks the end: the hub forwards in order.
		sub, err := stacktest.Broadcast(nc, "machine-info", []byte("{}"))
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		for {
			m, err := seen.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatalf("the marker broadcast did not reach the site: %v", err)
			}
			if m.Subject == fleet.AllSubject("machine-info", f.adminKey) {
				break
			}
			if !isBroadcastCall(m.Subject) {
				t.Fatalf("the site saw %s (%.80s)", m.Subject, m.Data)
			}
		}
	})

	hqTok := fleet.MachineToken(f.hq)
	evil, _ := nkeys.CreateUser()
	evilKey, _ := evil.PublicKey()
	opAdd, _ := json.Marshal(fleet.OperatorRequest{Name: "evil", Key: evilKey, Role: fleet.RoleAdmin})
	for _, tc := range []struct {
		name, subject, reply string
		body                 []byte
		after                func(t *testing.T)
	}{
		{"operators.add as the admin", fleet.CtlSubject(f.adminKey, fleet.OpOperatorsAdd), fleet.ControlInbox(f.adminKey) + ".x", opAdd,
			func(t *testing.T) {
				if _, ok := f.svc.Registry().Operator("evil"); ok {
					t.Fatal("the site added an admin")
				}
			}},
		{"call a hub machine", fleet.FnSubject(f.hq, "machine-info", f.adminKey), fleet.CallReply(f.adminKey, hqTok, "forged", 0), nil, nil},
		{"presence event", fleet.PresenceEventSubject(fleet.EventJoined, f.never), "", []byte(`{"event":"joined"}`), nil},
		{"agents' hint", fleet.AgentHintSubject, "", []byte(`{"reconnect_window_ms":600000}`), nil},
		{"reply as a hub machine", fleet.CallReply(f.adminKey, hqTok, "forged", 0), "", []byte(`{}`), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A raw leaf connection: a site broker heeds the hub's
			// interest and would not even send these; a compromised one
			// sends what it likes.
			raw := dialRawLeaf(t, f.leafPort, broker.LeafUser("dc2", broker.FleetAccount), leafSecret)
			args := tc.subject
			if tc.reply != "" {
				args += " " + tc.reply
			}
			raw.send(t, "LMSG "+args+" "+itoa(len(tc.body))+"\r\n"+string(tc.body)+"\r\n")
			raw.send(t, "PING\r\n")
			line := raw.until(t, "-ERR", "PONG")
			if !strings.Contains(line, "Permissions Violation for Publish") {
				t.Fatalf("the hub took %s from the site: %q", tc.subject, line)
			}
			if tc.after != nil {
				tc.after(t)
			}
		})
	}
}

// rawLeaf is a leaf connection to the hub spoken by hand.
type rawLeaf struct {
	conn net.Conn
	r    *bufio.Reader
}

// dialRawLeaf opens a leaf connection as user with password and waits
// until the hub has authorised it.
func dialRawLeaf(t *testing.T, port int, user, pass string) *rawLeaf {
	t.Helper()
	conn, err := net.Dial("tcp", "127.0.0.1:"+itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	l := &rawLeaf{conn: conn, r: bufio.NewReader(conn)}
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if line := l.line(t); !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("leaf port said %q", line)
	}
	connect, _ := json.Marshal(map[string]any{"user": user, "pass": pass, "name": "raw-" + user, "headers": true})
	l.send(t, "CONNECT "+string(connect)+"\r\nPING\r\n")
	if line := l.until(t, "PONG", "-ERR"); line != "PONG" {
		t.Fatalf("raw leaf connection refused: %q", line)
	}
	return l
}

func (l *rawLeaf) send(t *testing.T, s string) {
	t.Helper()
	if _, err := l.conn.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

func (l *rawLeaf) line(t *testing.T) string {
	t.Helper()
	s, err := l.r.ReadString('\n')
	if err != nil {
		t.Fatalf("raw leaf connection: %v (read %q)", err, s)
	}
	return strings.TrimRight(s, "\r\n")
}

// until reads lines until one starts with any of prefixes, answering
// the hub's pings, and returns it.
func (l *rawLeaf) until(t *testing.T, prefixes ...string) string {
	t.Helper()
	for {
		line := l.line(t)
		if line == "PING" {
			l.send(t, "PONG\r\n")
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				return line
			}
		}
	}
}

// TestLeafSiteOneLink: a second broker linking with site dc2's secret
// replaces the live link (one per site and account); the replaced link is
// closed, and it is logged and audited.
func TestLeafSiteOneLink(t *testing.T) {
	dir := t.TempDir()
	hub, auth, leafPort, ls := startLeafHub(t, dir, leafSecret, "dc2")
	svc := controlBehindSites(t, dir, hub.ClientURL(), time.Minute, ls)
	real := startSiteBroker(t, auth, leafPort, "dc2", leafSecret, "site-dc2")
	waitLinked(t, real)
	rogue := startRogueSite(t, leafPort, "dc2", leafSecret)
	admin, err := bench.Connect(hub.ClientURL(), bench.WithSeedFile(newOperator(t, svc, "ops", "admin")))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var rec fleet.AuditRecord
	stacktest.WaitFor(t, "the replaced link audited", 15*time.Second, func() bool {
		recs, err := admin.Audit(context.Background(), time.Time{}, 0, fleet.AuditLogRefused)
		if err != nil {
			return false
		}
		for _, r := range recs {
			if r.Kind == fleet.AuditRefused && r.Name == "dc2" && strings.Contains(r.Reason, "replaced the live one") {
				rec = r
				return true
			}
		}
		return false
	})
	if !strings.Contains(rec.Reason, "site:") || !strings.Contains(rec.Reason, "cc-broker leaf-site dc2") {
		t.Fatalf("audit record: %+v", rec)
	}
	rogue.srv.Shutdown()
	waitLinked(t, real)
}

// msgData is m's data, or "" without a message.
func msgData(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}

// drain discards what sub holds.
func drain(sub *nats.Subscription) {
	for {
		if _, err := sub.NextMsg(0); err != nil {
			return
		}
	}
}

// TestLeafSiteOneLinkAcrossRestart: a control service that starts while a
// site is linked learns the site's links from the hub (LEAFZ and CONNZ),
// so a second broker with the site's secret still replaces the live link
// and is audited, as if the service had seen the first link authorised.
func TestLeafSiteOneLinkAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	hub, auth, leafPort, ls := startLeafHub(t, dir, leafSecret, "dc2")
	first := controlBehindSites(t, dir, hub.ClientURL(), time.Minute, ls)
	real := startSiteBroker(t, auth, leafPort, "dc2", leafSecret, "site-dc2")
	waitLinked(t, real)
	first.Close()
	svc := controlBehindSites(t, dir, hub.ClientURL(), time.Minute, ls)
	startRogueSite(t, leafPort, "dc2", leafSecret)
	admin, err := bench.Connect(hub.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	stacktest.WaitFor(t, "the real site's link, made before the restart, replaced and audited", 15*time.Second, func() bool {
		recs, err := admin.Audit(context.Background(), time.Time{}, 0, fleet.AuditLogRefused)
		if err != nil {
			return false
		}
		for _, r := range recs {
			if r.Kind == fleet.AuditRefused && r.Name == "dc2" && strings.Contains(r.Reason, "replaced the live one") {
				return true
			}
		}
		return false
	})
}

// isBroadcastCall reports whether subject is a broadcast call's.
func isBroadcastCall(subject string) bool {
	c, err := fleet.ParseFnSubject(subject)
	return err == nil && c.Token == ""
}
