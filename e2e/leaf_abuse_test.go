package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"
)

// Security review round 2, findings 1 and 4: what someone who reaches the
// hub's leaf port without a secret, and a compromised site (with its
// secret), can do to the hub's admissions and to its registry.

// startLeafHubCost is startLeafHub with the sites' secret hashed at bcrypt
// cost (production uses bcrypt.DefaultCost: cc-broker leaf-site).
func startLeafHubCost(t *testing.T, dataDir, secret string, cost int, sites ...string) (*broker.Broker, broker.AuthKeys, int, []broker.LeafSite) {
	t.Helper()
	auth := stacktest.BrokerAuth(t, dataDir)
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), cost)
	if err != nil {
		t.Fatal(err)
	}
	var ls []broker.LeafSite
	for _, s := range sites {
		ls = append(ls, broker.LeafSite{Name: s, PasswordBcrypt: string(hash)})
	}
	leafPort := freePorts(t, 1)[0]
	hub := brokertest.StartWith(t, broker.Config{Listen: "127.0.0.1:0", Name: "hub", Auth: auth, PingInterval: time.Second, MaxPingsOut: stacktest.MaxPingsOut,
		LeafListen: "127.0.0.1:" + itoa(leafPort), LeafSites: ls, StoreDir: t.TempDir(), Logger: stacktest.Logger().With("broker", "hub")})
	return hub, auth, leafPort, ls
}

// wrongLeafLogin opens a leaf connection from the address from (on
// loopback) as user with a wrong secret, and reports whether the hub
// refused it.
func wrongLeafLogin(port int, from, user string) bool {
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conn, err := d.Dial("tcp", "127.0.0.1:"+itoa(port))
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil { // INFO
		return false
	}
	connect, _ := json.Marshal(map[string]any{"user": user, "pass": "not-the-secret", "name": "x", "headers": true})
	if _, err := conn.Write([]byte("CONNECT " + string(connect) + "\r\nPING\r\n")); err != nil {
		return false
	}
	for {
		s, err := r.ReadString('\n')
		if err != nil || strings.HasPrefix(s, "-ERR") {
			return true // refused (the hub closes the connection)
		}
	}
}

// leafFlood is n goroutines opening leaf connections with a wrong secret
// from one loopback address, until stopped.
type leafFlood struct {
	refused atomic.Int64
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startLeafFlood(t *testing.T, port int, from, user string, n int) *leafFlood {
	t.Helper()
	f := &leafFlood{stop: make(chan struct{})}
	for range n {
		f.wg.Go(func() {
			for {
				select {
				case <-f.stop:
					return
				default:
				}
				if wrongLeafLogin(port, from, user) {
					f.refused.Add(1)
				}
			}
		})
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(f.halt) })
	stacktest.WaitFor(t, "the leaf flood from "+from+" refused", 20*time.Second, func() bool { return f.refused.Load() >= 10 })
	return f
}

func (f *leafFlood) halt() {
	close(f.stop)
	f.wg.Wait()
}

// adminLogins logs in n times as the operator whose seed is in path, one
// after the other; each must be admitted within the client's connect
// timeout.
func adminLogins(t *testing.T, url, path string, n int, when string) {
	t.Helper()
	kp := stacktest.LoadKey(t, path)
	for i := range n {
		nc, err := connectAs(url, kp, "op")
		if err != nil {
			t.Fatalf("%s: admin login %d of %d failed: %v", when, i+1, n, err)
		}
		nc.Close()
	}
}

// TestThreatSiteLeafSecretFlood: anyone who reaches the hub's leaf port
// may try leaf links with a wrong secret, as many as they like. The
// secret is checked with bcrypt at the production cost; checked per
// attempt on the callout workers every admission shares, 32 such loops
// made admin logins at the hub fail (review 2, finding 1). Now a site's
// secret costs one bcrypt: later attempts compare its SHA-256, at most one
// bcrypt runs at a time and a host that gave a wrong secret is not
// checked again for a while. During floods from another address and
// then from the site's own: the site links for the first time, admin
// logins at the hub all succeed, and the site re-links (a new broker).
func TestThreatSiteLeafSecretFlood(t *testing.T) {
	dir := t.TempDir()
	hub, auth, leafPort, ls := startLeafHubCost(t, dir, leafSecret, bcrypt.DefaultCost, "dc2")
	svc := controlBehindSites(t, dir, hub.ClientURL(), time.Minute, ls)
	admin := newOperator(t, svc, "ops", "admin")

	other := startLeafFlood(t, leafPort, "127.0.0.2", "dc2.fleet", 16)
	adminLogins(t, hub.ClientURL(), admin, 10, "during a wrong-secret leaf flood from 127.0.0.2")
	site := startSiteBroker(t, auth, leafPort, "dc2", leafSecret, "site-dc2")
	waitLinked(t, site)

	same := startLeafFlood(t, leafPort, "127.0.0.1", "dc2.fleet", 16)
	adminLogins(t, hub.ClientURL(), admin, 10, "during wrong-secret leaf floods from 127.0.0.2 and the site's 127.0.0.1")
	site.Shutdown()
	again := startSiteBroker(t, auth, leafPort, "dc2", leafSecret, "site-dc2-again")
	waitLinked(t, again)
	adminLogins(t, hub.ClientURL(), admin, 5, "after the site re-linked during the floods")
	t.Logf("wrong-secret leaf links refused: %d from 127.0.0.2, %d from 127.0.0.1", other.refused.Load(), same.refused.Load())
}

// authRequest is an authorization request as a broker called server (with
// a fresh server key) sends it to the callout for a client called name
// connecting from host. With kp the client presents kp's key, validly
// signed over a nonce the sender chose (as a compromised site's broker may
// forge it); without, no key (so it is refused).
func authRequest(t *testing.T, server, name, host string, kp nkeys.KeyPair) []byte {
	t.Helper()
	srv, _ := nkeys.CreateServer()
	spub, _ := srv.PublicKey()
	user, _ := nkeys.CreateUser()
	upub, _ := user.PublicKey()
	req := jwt.NewAuthorizationRequestClaims(upub)
	req.UserNkey = upub
	req.Server = jwt.ServerID{Name: server, ID: spub}
	req.ConnectOptions.Name = name
	req.ClientInformation.Host = host
	if kp != nil {
		nonce := "chosen-by-the-site"
		sig, err := kp.Sign([]byte(nonce))
		if err != nil {
			t.Fatal(err)
		}
		req.ConnectOptions.Nkey = stacktest.Pub(t, kp)
		req.ConnectOptions.SignedNonce = base64.RawURLEncoding.EncodeToString(sig)
		req.ClientInformation.Nonce = nonce
	}
	tok, err := req.Encode(srv)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(tok)
}

// TestThreatSitePlantsPendingKey: a compromised site forges a callout
// request for a machine of the hub with a key of its own and the
// machine's address. Before (review 2, finding 4) the hub listed the key
// as pending "from" that address with nothing naming the site, told the
// site the key on record, and `machines accept` installed the site's key
// at the hub. Now: the machine's site is checked before its key, nothing
// is pending, the reply holds no key on record, and accept finds nothing.
// A site's attempt at an id not in the registry is pending with the site
// named (and audited so), and accepting it places the machine at that
// site only, and only when the operator names the site (review 3, R6:
// before, accept without --site placed the planted key at the site). The
// site is answered one text whether the id is not in the registry,
// registered to the hub or registered to another site (review 3, R6:
// before, each reply said which), so it cannot map the registry.
func TestThreatSitePlantsPendingKey(t *testing.T) {
	dir := t.TempDir()
	hub, _, leafPort, ls := startLeafHubCost(t, dir, leafSecret, bcrypt.MinCost, "dc2", "dc3")
	svc := controlBehindSites(t, dir, hub.ClientURL(), time.Minute, ls)
	const hq = "10.5.0.1_hq"
	startSiteAgent(t, svc, hub.ClientURL(), hq, "")
	stacktest.WaitFor(t, hq+" ONLINE", 10*time.Second, func() bool { return stacktest.Online(svc, hq) })
	hqMachine, _ := svc.Registry().Machine(hq)
	admin, err := bench.Connect(hub.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	rogue := startRogueSite(t, leafPort, "dc2", leafSecret)
	ctx := context.Background()

	evil, _ := nkeys.CreateUser()
	evilPub, _ := evil.PublicKey()
	m, err := rogue.ctl.Request(controlsvcAuthSubject, authRequest(t, "hub", hq, "10.5.0.1", evil), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := jwt.DecodeAuthorizationResponseClaims(string(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	if rc.Jwt != "" || rc.Error == "" || strings.Contains(rc.Error, hqMachine.Key) {
		t.Fatalf("the site got back %q (jwt %v); want a refusal that does not hold the key on record", rc.Error, rc.Jwt != "")
	}
	// Probing: the hub's machine (above), a new id, and dc3's machine are
	// all answered alike.
	const elsewhere = "10.6.0.1_dc3-a"
	if _, err := svc.Registry().SetMachineAt(elsewhere, evilPub, "dc3", nil, "test", false); err != nil {
		t.Fatal(err)
	}
	replies := map[string]string{hq: strings.ReplaceAll(rc.Error, hq, "ID")}
	// A forged request for a new id, answered after the first: by then
	// the first was recorded, if it ever is.
	const planted = "10.9.0.1_planted"
	for _, id := range []string{planted, elsewhere} {
		m, err := rogue.ctl.Request(controlsvcAuthSubject, authRequest(t, "hub", id, "203.0.113.9", evil), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := jwt.DecodeAuthorizationResponseClaims(string(m.Data))
		if err != nil || rc.Jwt != "" {
			t.Fatalf("%s from the site: %v, jwt %v", id, err, rc.Jwt != "")
		}
		replies[id] = strings.ReplaceAll(rc.Error, id, "ID")
	}
	if replies[planted] != replies[hq] || replies[elsewhere] != replies[hq] || strings.Contains(replies[hq], "registered") {
		t.Fatalf("the site can tell ids apart: not in the registry %q, the hub's %q, dc3's %q; want one text", replies[planted], replies[hq], replies[elsewhere])
	}
	t.Logf("the site is told: %s", replies[hq])
	pend, err := admin.PendingMachines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got *fleet.Pending
	for i, p := range pend {
		if p.ID == hq {
			t.Fatalf("the site planted a pending key for the hub's machine: %+v", p)
		}
		if p.ID == planted {
			got = &pend[i]
		}
	}
	if got == nil || got.Site != "dc2" || len(got.Keys) != 1 || got.Keys[0].Site != "dc2" || got.Keys[0].Key != evilPub {
		t.Fatalf("pending %+v, want %s with the site's key, from site dc2", got, planted)
	}
	if _, err := admin.AcceptMachine(ctx, hq, ""); err == nil {
		t.Fatalf("accept %s found a pending key", hq)
	}
	if now, _ := svc.Registry().Machine(hq); now.Key != hqMachine.Key || now.Site != "" {
		t.Fatalf("%s is now %+v", hq, now)
	}
	stacktest.WaitFor(t, "the site's forged refusal audited with the site", 10*time.Second, func() bool {
		recs, _ := admin.Audit(ctx, time.Time{}, 0, fleet.AuditLogRefused)
		for _, r := range recs {
			if r.Name == hq && r.Key == evilPub && r.Site == "dc2" {
				return true
			}
		}
		return false
	})

	// The site's key is accepted at that site only.
	var fe *fleet.Error
	if _, err := admin.AcceptMachineAt(ctx, planted, "", "dc3"); !errors.As(err, &fe) || !strings.Contains(fe.Description, "--site dc2") {
		t.Fatalf("accept the site's key at site dc3: %v, want a refusal naming site dc2", err)
	}
	// Not without --site: the operator may have meant the id for the hub.
	if _, err := admin.AcceptMachine(ctx, planted, ""); !errors.As(err, &fe) || fe.Code != fleet.CodeConflict || !strings.Contains(fe.Description, "--site dc2") {
		t.Fatalf("accept the site's key without --site: %v, want 409 naming site dc2 and the flag", err)
	}
	if _, ok := svc.Registry().Machine(planted); ok {
		t.Fatalf("a refused accept registered %s", planted)
	}
	ch, err := admin.AcceptMachineAt(ctx, planted, "", "dc2")
	if err != nil || ch.Site != "dc2" {
		t.Fatalf("accept %s --site dc2: %+v %v, want it at site dc2", planted, ch, err)
	}
	if nc, err := connectAs(hub.ClientURL(), evil, planted); !isAuthErr(err) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("the site's key at the hub: %v, want an authorization violation", err)
	}
}

// controlsvcAuthSubject is the callout subject as a site's broker
// publishes it (the hub's import renames it under the site).
const controlsvcAuthSubject = "$SYS.REQ.USER.AUTH"

// TestThreatSiteCalloutFlood: a compromised site publishes forged callout
// requests as fast as it can. Before (review 2, finding 4) they shared the
// hub's stack and workers and every one was answered (with no expiry it
// never went stale), slowing hub logins. Now each site's requests wait in
// a stack of their own, at most DefaultSiteCalloutRate a second (bursts
// of DefaultSiteCalloutBurst); the excess is dropped unanswered. During a
// flood of 50,000 the admin's logins at the hub all succeed, and the
// site gets far fewer answers than it sent.
func TestThreatSiteCalloutFlood(t *testing.T) {
	dir := t.TempDir()
	hub, _, leafPort, ls := startLeafHubCost(t, dir, leafSecret, bcrypt.MinCost, "dc2")
	// The service's clock stands still (from now: the brokers judge the
	// credentials it issues by their own): the site's bucket never
	// refills, so however long the flood takes on a loaded machine, the
	// site can be answered at most its burst.
	frozen := time.Now()
	svc := stacktest.StartControlWith(t, controlsvc.Config{DataDir: dir, BrokerURL: hub.ClientURL(), Audit: controlsvc.AuditConfig{NotDurable: true},
		ResyncInterval: time.Minute, LeafSites: ls, Now: func() time.Time { return frozen }, Logger: stacktest.Logger().With("side", "control")})
	admin := newOperator(t, svc, "ops", "admin")
	rogue := startRogueSite(t, leafPort, "dc2", leafSecret)

	const total, batch = 50000, 1000
	var answers atomic.Int64
	sub, err := rogue.ctl.Subscribe("_INBOX.flood.>", func(*nats.Msg) { answers.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	req := authRequest(t, "rogue", "flood", "127.0.0.1", nil)
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for sent.Load() < total {
			for i := range batch {
				_ = rogue.ctl.PublishRequest(controlsvcAuthSubject, "_INBOX.flood."+strconv.Itoa(i), req)
			}
			_ = rogue.ctl.Flush()
			sent.Add(batch)
		}
	}()
	stacktest.WaitFor(t, "the flood under way", 20*time.Second, func() bool { return sent.Load() >= 5*batch })
	adminLogins(t, hub.ClientURL(), admin, 15, "during a site's callout flood")
	<-done
	// Limited, the site gets its burst and never more (its clock stands
	// still): the bound holds whenever it is read. Unlimited, answers come
	// back while the flood runs (31,900 of 50,000 before the fix, read at
	// the same point).
	adminLogins(t, hub.ClientURL(), admin, 3, "after a site's callout flood")
	const most = controlsvc.DefaultSiteCalloutBurst
	if n := answers.Load(); n > most {
		t.Fatalf("the site got %d answers to %d forged requests; want at most %d (its burst, with no refill)", n, total, most)
	}
	t.Logf("the site sent %d forged callout requests and got %d answers", sent.Load(), answers.Load())
	adminLogins(t, hub.ClientURL(), admin, 3, "after a site's callout flood")
}

// TestThreatSiteLeafFloodBeforeFirstLink: a flood of wrong-secret leaf
// links from the site's own address (behind the same NAT, a machine at
// the site, or every caller when the hub sits behind a proxy), started
// before the real site's broker has ever linked, does not keep the site
// out: its entry carries the SHA-256 verifier cc-broker leaf-site writes,
// checked in constant time with no bcrypt slot and no wait to hold. (With
// a per-address wait the review saw the site out for 20 s.)
func TestThreatSiteLeafFloodBeforeFirstLink(t *testing.T) {
	dir := t.TempDir()
	hub, auth, leafPort, ls := startLeafHub(t, dir, leafSecret, "dc2")
	controlBehindSites(t, dir, hub.ClientURL(), time.Minute, ls)
	f := startLeafFlood(t, leafPort, "127.0.0.1", "dc2.fleet", 2)
	site := startSiteBroker(t, auth, leafPort, "dc2", leafSecret, "site-dc2")
	waitLinked(t, site)
	t.Logf("the site linked during a same-address flood (%d wrong-secret attempts refused)", f.refused.Load())
}
