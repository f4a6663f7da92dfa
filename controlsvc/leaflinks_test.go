package controlsvc

import (
	"slices"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/jwt/v2"
	"golang.org/x/crypto/bcrypt"
)

// TestDecideAtSite: a site's broker admits only the machines registered
// to that site; the hub refuses them, and operators connect at the hub
// only. The hub's own broker is told why; a remote site is told one text
// for every refused identity (review 3, R6), while the audit keeps why.
func TestDecideAtSite(t *testing.T) {
	f := newCalloutFixture(t)
	var audited []string
	f.c.onAudit = func(_, _, _, _, _, reason string) { audited = append(audited, reason) }
	kp, pub := newUser(t)
	if _, err := f.reg.SetMachineAt("10.2.0.1_dc2-a", pub, "dc2", nil, "test", false); err != nil {
		t.Fatal(err)
	}
	if uc, err := f.c.decideAt(request(t, kp, "10.2.0.1_dc2-a"), "dc2"); err != nil || uc.Name != "agent:10.2.0.1_dc2-a" {
		t.Fatalf("site machine at its site: %v", err)
	}
	other, _ := newUser(t)
	for _, tc := range []struct {
		name string
		req  *jwt.AuthorizationRequestClaims
		at   string
		want string // in the audit, and in the reply to the hub's broker
	}{
		{"site machine at the hub", request(t, kp, "10.2.0.1_dc2-a"), "", "registered to site dc2"},
		{"site machine at another site", request(t, kp, "10.2.0.1_dc2-a"), "dc3", "registered to site dc2, not to site dc3"},
		{"site machine with another key", request(t, other, "10.2.0.1_dc2-a"), "dc2", "not the key on record; if the machine was rebuilt, re-accept it with: cc-bench machines accept 10.2.0.1_dc2-a --site dc2"},
		{"hub machine at a site", request(t, f.webKP, "10.0.0.5_web01"), "dc2", "registered to the hub"},
		{"operator at a site", request(t, f.adminKP, "cc-bench"), "dc2", "operators connect to the hub"},
		{"unregistered machine at a site", request(t, kp, "10.2.0.2_dc2-new"), "dc2", "machines accept 10.2.0.2_dc2-new --site dc2"},
	} {
		audited = nil
		_, err := f.c.decideAt(tc.req, tc.at)
		if err == nil {
			t.Errorf("%s: admitted", tc.name)
			continue
		}
		if len(audited) != 1 || !strings.Contains(audited[0], tc.want) {
			t.Errorf("%s: audited %q, want a reason saying %q", tc.name, audited, tc.want)
		}
		want := tc.want
		if tc.at != "" {
			want = siteRefusal(tc.req.ConnectOptions.Name, tc.at)
			if err.Error() != want {
				t.Errorf("%s: site %s was told %q, want only %q", tc.name, tc.at, err, want)
			}
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want a refusal saying %q", tc.name, err, want)
		}
	}
}

// TestSiteCannotProbeRegistry (review 3, R6): a site that presents one
// id after another, each with a key of its own, is answered the same text
// for an id not in the registry, one registered to the hub, one registered
// to another site and its own machine's id: it cannot map the registry.
// An id that is not a machine id is told so before any key is looked up,
// so an operator's key is not told apart either.
func TestSiteCannotProbeRegistry(t *testing.T) {
	f := newCalloutFixture(t)
	_, pub := newUser(t)
	for id, site := range map[string]string{"10.3.0.1_dc3-a": "dc3", "10.2.0.1_dc2-a": "dc2"} {
		if _, err := f.reg.SetMachineAt(id, pub, site, nil, "test", false); err != nil {
			t.Fatal(err)
		}
	}
	evil, _ := newUser(t)
	var replies []string
	for _, id := range []string{"10.9.9.9_nowhere", "10.0.0.5_web01", "10.3.0.1_dc3-a", "10.2.0.1_dc2-a"} {
		_, err := f.c.decideAt(request(t, evil, id), "dc2")
		if err == nil {
			t.Fatalf("%s admitted", id)
		}
		replies = append(replies, strings.ReplaceAll(err.Error(), id, "ID"))
	}
	for i, r := range replies[1:] {
		if r != replies[0] {
			t.Errorf("reply %d %q differs from %q", i+1, r, replies[0])
		}
	}
	_, errOp := f.c.decideAt(request(t, f.adminKP, "not a machine"), "dc2")
	_, errAny := f.c.decideAt(request(t, evil, "not a machine"), "dc2")
	if errOp == nil || errAny == nil || errOp.Error() != errAny.Error() {
		t.Errorf("an invalid name with an operator's key: %v; with another key: %v; want the same refusal", errOp, errAny)
	}
}

// TestDecideLeafLink: a leaf link is authorised by its site's secret,
// bound to the account its site may use, and the FLEET link gets its own
// machines' subjects only; one live link per site and account is kept.
func TestDecideLeafLink(t *testing.T) {
	f := newCalloutFixture(t)
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	f.c.sites = map[string]string{"dc2": string(hash)}
	var links []leafLink
	f.c.onLink = func(l leafLink) { links = append(links, l) }
	_, pub := newUser(t)
	if _, err := f.reg.SetMachineAt("10.2.0.1_dc2-a", pub, "dc2", nil, "test", false); err != nil {
		t.Fatal(err)
	}
	leaf := func(user, pass string) *jwt.AuthorizationRequestClaims {
		req := rawRequest(t, "", "site-dc2", "", "")
		req.ConnectOptions.Username, req.ConnectOptions.Password = user, pass
		req.ClientInformation.Kind = leafKind
		return req
	}
	for user, want := range map[string]string{"dc2.sys": "SITE_dc2_SYS", "dc2.control": "SITE_dc2_CONTROL", "dc2.fleet": "FLEET"} {
		uc, err := f.c.decideAt(leaf(user, "s3cret"), "")
		if err != nil || uc.Audience != want || uc.Expires != 0 {
			t.Fatalf("link %s: %+v %v, want bound to %s without expiry", user, uc, err, want)
		}
		if user != "dc2.fleet" {
			continue
		}
		p := uc.Permissions
		tok := fleet.MachineToken("10.2.0.1_dc2-a")
		if !slices.Contains(p.Pub.Allow, fleet.MachineReplies(tok)) || !slices.Contains(p.Sub.Allow, fleet.MachineCallsWildcard(tok)) {
			t.Errorf("FLEET link permissions %+v lack the site's machine", p)
		}
		for _, s := range append(p.Pub.Allow, p.Sub.Allow...) {
			if strings.Contains(s, "web01") || strings.HasPrefix(s, fleet.CtlRoot) || strings.HasPrefix(s, fleet.PresenceEventRoot) || s == ">" {
				t.Errorf("FLEET link may use %s", s)
			}
		}
		if slices.Contains(p.Pub.Allow, fleet.AgentHintSubject) || slices.Contains(p.Pub.Allow, fleet.BroadcastCallsWildcard) {
			t.Errorf("FLEET link may publish %v", p.Pub.Allow)
		}
	}
	if len(links) != 3 || links[0].site != "dc2" {
		t.Errorf("links recorded: %+v", links)
	}
	for _, tc := range []struct{ user, pass, at, want string }{
		{"dc2.fleet", "wrong", "", "wrong secret for site dc2"},
		{"dc9.fleet", "s3cret", "", "site dc9 is not in cc-control's leaf sites"},
		{"dc2.jetstream", "s3cret", "", "is not SITE.sys"},
		{"dc2.fleet", "s3cret", "dc2", "may not accept leaf links"},
	} {
		if _, err := f.c.decideAt(leaf(tc.user, tc.pass), tc.at); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("link %s at %q: got %v, want %q", tc.user, tc.at, err, tc.want)
		}
	}

	var ll leafLinks
	a := leafLink{site: "dc2", account: "FLEET", conn: connKey{"S", 1}}
	if _, replaced := ll.linked(a); replaced {
		t.Error("first link replaced something")
	}
	if _, replaced := ll.linked(a); replaced {
		t.Error("the same link replaced itself")
	}
	b := a
	b.conn.cid = 2
	if old, replaced := ll.linked(b); !replaced || old.conn.cid != 1 {
		t.Errorf("second link: replaced %v %+v", replaced, old)
	}
}

// TestAdoptLinks: links found live are kept one per site and account:
// the recorded one if found or newer than the look, else the newest found.
func TestAdoptLinks(t *testing.T) {
	var ll leafLinks
	link := func(acc string, cid uint64) leafLink {
		return leafLink{site: "dc2", account: acc, conn: connKey{"S", cid}}
	}
	if extra := ll.adopt([]leafLink{link("SYS", 3), link("SYS", 7), link("FLEET", 4)}, ll.mark()); len(extra) != 1 || extra[0].conn.cid != 3 {
		t.Fatalf("unknown links: closed %+v, want the older SYS link", extra)
	}
	if l, _ := ll.link("dc2", "SYS"); l.conn.cid != 7 {
		t.Fatalf("kept %+v", l)
	}
	ll.linked(link("SYS", 5)) // recorded, found later
	if extra := ll.adopt([]leafLink{link("SYS", 5), link("SYS", 7)}, ll.mark()); len(extra) != 1 || extra[0].conn.cid != 7 {
		t.Fatalf("recorded link found: closed %+v, want the other", extra)
	}
	mark := ll.mark()
	ll.linked(link("SYS", 9)) // recorded after the look began
	if extra := ll.adopt([]leafLink{link("SYS", 5)}, mark); len(extra) != 1 || extra[0].conn.cid != 5 {
		t.Fatalf("newer recorded link: closed %+v, want the one found", extra)
	}
	if extra := ll.adopt([]leafLink{link("SYS", 5)}, ll.mark()); len(extra) != 0 {
		t.Fatalf("recorded link gone: closed %+v, want none", extra)
	}
	if l, _ := ll.link("dc2", "SYS"); l.conn.cid != 5 {
		t.Fatalf("recorded link gone: kept %+v, want the one found", l)
	}
}

// TestRegistrySites: a machine's site is validated, kept, and every
// change to a site's set of machines is reported.
func TestRegistrySites(t *testing.T) {
	f := newCalloutFixture(t)
	var changed []string
	f.reg.onSites = func(sites ...string) { changed = append(changed, strings.Join(sites, "+")) }
	_, pub := newUser(t)
	if _, err := f.reg.SetMachineAt("10.2.0.1_dc2-a", pub, "d c2", nil, "test", false); err == nil {
		t.Fatal("a bad site name was accepted")
	}
	if _, err := f.reg.SetMachineAt("10.2.0.1_dc2-a", pub, "dc2", nil, "test", false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.SetMachineAt("10.2.0.1_dc2-a", pub, "dc3", nil, "test", true); err != nil {
		t.Fatal(err)
	}
	if got := f.reg.SiteMachines("dc3"); !slices.Equal(got, []string{"10.2.0.1_dc2-a"}) {
		t.Errorf("dc3's machines: %v", got)
	}
	// A re-keyed machine (accept without a site) stays at its site.
	_, pub2 := newUser(t)
	f.reg.RecordPending("10.2.0.1_dc2-a", pub2, "192.0.2.9", "key does not match")
	if c, err := f.reg.AcceptAt("10.2.0.1_dc2-a", pub2, "", "test"); err != nil || c.Site != "dc3" {
		t.Errorf("re-keyed machine: %+v %v, want it still at dc3", c, err)
	}
	if _, err := f.reg.Label("10.2.0.1_dc2-a", map[string]string{"a": "b"}, nil); err != nil {
		t.Fatal(err)
	}
	reopened, err := OpenRegistry(f.reg.path)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := reopened.Machine("10.2.0.1_dc2-a"); m.Site != "dc3" {
		t.Errorf("site after reopening the registry: %q", m.Site)
	}
	if err := f.reg.RemoveMachine("10.2.0.1_dc2-a"); err != nil {
		t.Fatal(err)
	}
	if want := []string{"dc2", "dc2+dc3", "dc3"}; !slices.Equal(changed, want) {
		t.Errorf("site changes: got %v, want %v", changed, want)
	}
}
