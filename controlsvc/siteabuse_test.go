package controlsvc

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"
)

// TestSiteSecretsCheckOnce: a site's secret costs one bcrypt: once it
// checked out, every later attempt is compared with its SHA-256 (a wrong
// one costs no bcrypt either); before that one bcrypt runs at a time (an
// attempt that finds one running is refused as busy at once), and a host
// that gave a wrong secret is refused without a check for a while.
func TestSiteSecretsCheckOnce(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	var s siteSecrets
	bcrypts := 0
	s.compare = func(h, p []byte) error { bcrypts++; return bcrypt.CompareHashAndPassword(h, p) }
	at := calloutTime
	check := func(secret, host string, want, wantBcrypts int) {
		t.Helper()
		if got := s.check("dc2", string(hash), secret, host, func() time.Time { return at }); got != want || bcrypts != wantBcrypts {
			t.Fatalf("check(%q from %s) = %d after %d bcrypts; want %d after %d", secret, host, got, bcrypts, want, wantBcrypts)
		}
	}
	check("wrong", "192.0.2.1", secretWrong, 1)
	check("wrong2", "192.0.2.1", secretNotChecked, 1) // the same host soon after: not checked, never called wrong
	check("wrong2", "192.0.2.9", secretWrong, 2)      // another host: checked
	at = at.Add(siteSecretRetry)
	check("wrong3", "192.0.2.1", secretWrong, 3)
	s.bcrypt.Lock() // a check is running
	check("s3cret", "192.0.2.2", secretBusy, 3)
	s.bcrypt.Unlock()
	check("s3cret", "192.0.2.2", secretOK, 4)
	s.bcrypt.Lock() // known now: no bcrypt needed, busy or not
	for range 5 {
		check("wrong", "192.0.2.3", secretWrong, 4)
		check("s3cret", "192.0.2.2", secretOK, 4)
	}
	check("s3cret", "192.0.2.1", secretOK, 4) // the host that failed, with the right secret
	s.bcrypt.Unlock()
}

// TestSiteQueuesRateAndTurns: each site's requests are bounded by its
// rate (the excess is dropped at once), and the sites are served in turn,
// newest first.
func TestSiteQueuesRateAndTurns(t *testing.T) {
	now := calloutTime
	q := newSiteQueues(10, 4, 3, func() time.Time { return now }, slog.New(slog.DiscardHandler))
	push := func(site string, n int) {
		for i := range n {
			q.push(&nats.Msg{Subject: fleet.SiteAuthSubject(site), Reply: site + "." + string(rune('a'+i))})
		}
	}
	push("dc2", 10) // burst 4: a, b, c, d pass; the stack holds 3 at most
	push("dc3", 2)
	q.push(&nats.Msg{Subject: "sys.commandControl.site.bad site.auth"}) // no site: dropped
	var got []string
	for range 5 {
		it, ok := q.pop()
		if !ok {
			t.Fatal("pop failed")
		}
		got = append(got, it.m.Reply)
	}
	// dc2 held a, b, c; d arrived on the full stack and dropped the oldest
	// (a quarter, at least one: a): b, c, d. dc3 held a, b.
	want := []string{"dc2.d", "dc3.b", "dc2.c", "dc3.a", "dc2.b"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("popped %v, want %v", got, want)
	}
	now = now.Add(time.Second / 10) // one more token for dc2
	push("dc2", 3)
	if it, _ := q.pop(); it.m.Reply != "dc2.a" {
		t.Fatalf("after a refill: popped %q", it.m.Reply)
	}
	q.mu.Lock()
	left := len(q.turn) + len(q.stacks)
	q.mu.Unlock()
	if left != 0 {
		t.Fatalf("requests left after every one was popped: turn %v", q.turn)
	}
	done := make(chan bool)
	go func() { _, ok := q.pop(); done <- ok }()
	q.close()
	if <-done {
		t.Fatal("pop after close returned a request")
	}
}

// TestSiteRequestWithoutExpiryGoesStale: a request that waited longer
// than any broker waits is skipped, whatever its expiry (a site sends
// none, or one far off).
func TestSiteRequestWithoutExpiryGoesStale(t *testing.T) {
	f := newCalloutFixture(t)
	server, _ := nkeys.CreateServer()
	for _, exp := range []int64{0, calloutTime.Add(time.Hour).Unix()} {
		req := request(t, f.webKP, "10.0.0.5_web01")
		req.Expires = exp
		tok, _ := req.Encode(server)
		if _, err := f.c.authorizeQueued([]byte(tok), "", "dc2", calloutTime.Add(-calloutMaxWait-time.Second)); !errors.Is(err, errStaleRequest) {
			t.Errorf("expiry %d, waited past calloutMaxWait: got %v, want errStaleRequest", exp, err)
		}
		if _, err := f.c.authorizeQueued([]byte(tok), "", "dc2", calloutTime); err != nil {
			t.Errorf("expiry %d, fresh: %v", exp, err)
		}
	}
	// The hub's own brokers' expiry is believed (their auth timeout may
	// be longer than calloutMaxWait); without one the wait bounds it.
	req := request(t, f.webKP, "10.0.0.5_web01")
	req.Expires = calloutTime.Add(time.Minute).Unix()
	tok, _ := req.Encode(server)
	if _, err := f.c.authorizeQueued([]byte(tok), "", "", calloutTime.Add(-calloutMaxWait-time.Second)); err != nil {
		t.Errorf("hub request within its expiry: %v", err)
	}
	req.Expires = 0
	tok, _ = req.Encode(server)
	if _, err := f.c.authorizeQueued([]byte(tok), "", "", calloutTime.Add(-calloutMaxWait-time.Second)); !errors.Is(err, errStaleRequest) {
		t.Errorf("hub request without an expiry, waited past calloutMaxWait: got %v, want errStaleRequest", err)
	}
}

// TestDecideAtSiteBelievesItAboutItsOwn: a site is believed only about its
// own machines. A request from site dc2 for the hub's machine with
// another key (a compromised site can sign any nonce it chooses) is
// refused on the machine's site, records nothing pending and does not
// disclose the key on record; a site's attempts are pending with the
// site named, the refusal audited with the site, and a key a site
// reported is accepted only at that site.
func TestDecideAtSiteBelievesItAboutItsOwn(t *testing.T) {
	f := newCalloutFixture(t)
	type audited struct{ who, key, ip, site, reason string }
	var recs []audited
	f.c.onAudit = func(_, who, key, ip, site, reason string) { recs = append(recs, audited{who, key, ip, site, reason}) }
	webKey, _ := f.webKP.PublicKey()
	evil, evilPub := newUser(t)

	_, err := f.c.decideAt(request(t, evil, "10.0.0.5_web01"), "dc2")
	if err == nil || strings.Contains(err.Error(), webKey) || err.Error() != siteRefusal("10.0.0.5_web01", "dc2") {
		t.Fatalf("hub machine with another key at site dc2: got %v, want the sites' one refusal, without the key on record", err)
	}
	if last := recs[len(recs)-1]; !strings.Contains(last.reason, "registered to the hub") || strings.Contains(last.reason, webKey) {
		t.Errorf("audited %q, want it refused on its site, without the key on record", last.reason)
	}
	if ps := f.reg.Pending(); len(ps) != 0 {
		t.Fatalf("a site planted a pending key for the hub's machine: %+v", ps)
	}
	if last := recs[len(recs)-1]; last.site != "dc2" || last.key != evilPub {
		t.Errorf("audited %+v, want the site dc2 named", last)
	}

	// The site's own machine with another key: pending at the site, and
	// the reply does not hold the key on record.
	own, ownPub := newUser(t)
	if _, err := f.reg.SetMachineAt("10.2.0.1_dc2-a", ownPub, "dc2", nil, "test", false); err != nil {
		t.Fatal(err)
	}
	_ = own
	_, err = f.c.decideAt(request(t, evil, "10.2.0.1_dc2-a"), "dc2")
	if err == nil || strings.Contains(err.Error(), ownPub) || err.Error() != siteRefusal("10.2.0.1_dc2-a", "dc2") {
		t.Fatalf("site machine with another key: got %v, want the sites' one refusal, without the key on record", err)
	}
	if last := recs[len(recs)-1]; !strings.Contains(last.reason, "not the key on record") || strings.Contains(last.reason, ownPub) {
		t.Errorf("audited %q, want a refusal on the key, without the key on record", last.reason)
	}
	// A new id at the site: pending with the site.
	if _, err := f.c.decideAt(request(t, evil, "10.2.0.9_dc2-new"), "dc2"); err == nil {
		t.Fatal("unregistered machine admitted")
	}
	for _, p := range f.reg.Pending() {
		if p.Site != "dc2" || len(p.Keys) != 1 || p.Keys[0].Site != "dc2" || p.Keys[0].Key != evilPub {
			t.Errorf("pending %+v, want the key from site dc2", p)
		}
	}
	// Accepted at the site it came from, never elsewhere.
	if _, err := f.reg.AcceptAt("10.2.0.9_dc2-new", "", "dc3", "test"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "--site dc2") {
		t.Fatalf("accept a site's key at another site: got %v, want a conflict naming site dc2", err)
	}
	// Not by default (review 3, R6): a site may pre-plant a key for an
	// id the hub is about to add; the operator must name the site.
	if _, err := f.reg.AcceptAt("10.2.0.9_dc2-new", "", "", "test"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "--site dc2") {
		t.Fatalf("accept a site's key without --site: got %v, want a conflict naming site dc2 and the flag", err)
	}
	if _, ok := f.reg.Machine("10.2.0.9_dc2-new"); ok {
		t.Fatal("a refused accept registered the machine")
	}
	if c, err := f.reg.AcceptAt("10.2.0.9_dc2-new", "", "dc2", "test"); err != nil || c.Site != "dc2" || c.Key != evilPub {
		t.Fatalf("accept a site's key with --site dc2: %+v %v, want it registered at site dc2", c, err)
	}
}

// TestSitePendingNeverEvicts: a site's attempt at a new id is not
// recorded when the pending list is full, so a site cannot push the
// hub's entries out.
func TestSitePendingNeverEvicts(t *testing.T) {
	r, _ := openTestRegistry(t)
	_, key := newUser(t)
	r.mu.Lock()
	for i := range MaxPending {
		id := fmt.Sprintf("m%06d", i)
		r.data.Pending[id] = &fleet.Pending{ID: id, Key: key, FirstSeen: calloutTime, LastSeen: calloutTime, Attempts: 1}
	}
	r.mu.Unlock()
	r.RecordPendingAt("from-site", key, "192.0.2.1", "dc2", "not in the registry")
	ps := r.Pending()
	if len(ps) != MaxPending || ps[0].ID != "m000000" {
		t.Fatalf("after a site's attempt on a full list: %d entries, first %s; want %d with m000000 kept", len(ps), ps[0].ID, MaxPending)
	}
	r.RecordPendingAt("m000005", key, "192.0.2.1", "dc2", "not in the registry") // an existing entry is updated
	for _, p := range r.Pending() {
		if p.ID == "m000005" && (p.Attempts != 2 || p.Site != "dc2") {
			t.Errorf("updated entry %+v", p)
		}
	}
}

// TestSiteSecretWaitIsPerSite: a wrong secret for one site from an
// address does not hold back another site's link from the same address
// (a hub behind a proxy, two sites behind one NAT), and the right secret
// for the site that failed is told "not checked", never "wrong".
func TestSiteSecretWaitIsPerSite(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	var s siteSecrets
	at := func() time.Time { return calloutTime }
	if got := s.check("dc3", string(hash), "wrong", "192.0.2.1", at); got != secretWrong {
		t.Fatalf("wrong secret for dc3: %d", got)
	}
	if got := s.check("dc2", string(hash), "s3cret", "192.0.2.1", at); got != secretOK {
		t.Fatalf("dc2's right secret from the address that failed for dc3: %d, want OK", got)
	}
	if got := s.check("dc3", string(hash), "s3cret", "192.0.2.1", at); got != secretNotChecked {
		t.Fatalf("dc3's right secret within the wait: %d, want not checked", got)
	}
}

// TestSiteSecretVerifierNeedsNoBcrypt: a site whose entry carries the
// SHA-256 verifier (what cc-broker leaf-site writes) is checked in
// constant time: the right secret passes, a wrong one fails, and no
// bcrypt ever runs, busy or not.
func TestSiteSecretVerifierNeedsNoBcrypt(t *testing.T) {
	secret, site, err := broker.NewLeafSite("dc2")
	if err != nil {
		t.Fatal(err)
	}
	sum, ok := site.Verifier()
	if !ok {
		t.Fatalf("NewLeafSite wrote no verifier: %+v", site)
	}
	if got := checkSiteSum(sum, secret); got != secretOK {
		t.Fatalf("the right secret: %d", got)
	}
	for _, wrong := range []string{"", "x", secret + "x", secret[:len(secret)-1]} {
		if got := checkSiteSum(sum, wrong); got != secretWrong {
			t.Fatalf("secret %q: %d, want wrong", wrong, got)
		}
	}
}
