package controlsvc

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/jwt/v2"
	"golang.org/x/crypto/bcrypt"
)

// Remote sites' leaf links (see broker/leaf.go). The hub sends every leaf
// connection to the callout: this file checks a link's site secret,
// binds it to the account the site may use, gives the FLEET link the
// permissions its registered machines need and no more, and keeps one
// live link per site and account.

// leafKind is the connection kind of a leaf link in a callout request.
const leafKind = "Leafnode"

// leafLink is one authorised leaf link.
type leafLink struct {
	site, account string
	conn          connKey // the hub's server id and the link's cid there
	host          string
	seq           uint64 // when it was recorded (leafLinks.seq)
}

// decideLeaf authorises a leaf link to the hub. Its user is
// "<site>.<account>" and its password the site's secret.
func (c *callout) decideLeaf(req *jwt.AuthorizationRequestClaims, at string) (*jwt.UserClaims, error) {
	opts, ci := req.ConnectOptions, req.ClientInformation
	who := opts.Username
	if at != "" {
		return nil, c.refuse("site", who, "", ci.Host, fmt.Sprintf("site %s's broker may not accept leaf links: only the hub does", at))
	}
	site, account, ok := broker.ParseLeafUser(who)
	if !ok {
		return nil, c.refuse("site", who, "", ci.Host, fmt.Sprintf("leaf link user %q is not SITE.sys, SITE.control or SITE.fleet: "+
			"configure the site's broker with --site NAME and the secret cc-broker leaf-site NAME wrote", who))
	}
	hash, ok := c.sites[site]
	if !ok {
		return nil, c.refuse("site", site, "", ci.Host, fmt.Sprintf("site %s is not in cc-control's leaf sites; "+
			"give cc-control the hub's leaf sites file (--leaf-sites FILE, from cc-broker leaf-site %s)", site, site))
	}
	outcome := secretOK
	if sum, ok := c.siteSums[site]; ok {
		outcome = checkSiteSum(sum, opts.Password)
	} else {
		outcome = c.secrets.check(site, hash, opts.Password, ci.Host, c.clock)
	}
	switch outcome {
	case secretNotChecked:
		return nil, c.refuse("site", site, "", ci.Host, fmt.Sprintf("not checked: a wrong secret for site %s came from this address "+
			"less than %v ago; the site's broker retries by itself (if this repeats, someone at this address is trying leaf links "+
			"with a wrong secret; recreating site %s with cc-broker leaf-site gives a check that needs no wait)", site, siteSecretRetry, site))
	case secretBusy:
		return nil, c.refuse("site", site, "", ci.Host, fmt.Sprintf("the hub is checking another leaf link's secret: "+
			"site %s's broker retries by itself (if this repeats, someone without the secret may be trying leaf links: check the hub's leaf port)", site))
	case secretWrong:
		return nil, c.refuse("site", site, "", ci.Host, fmt.Sprintf("wrong secret for site %s: the site's broker needs "+
			"the secret file cc-broker leaf-site %s wrote, matching the hash in the leaf sites file", site, site))
	}
	target, _ := broker.LeafLinkAccount(site, account)
	uc := jwt.NewUserClaims(req.UserNkey)
	uc.Audience = target
	uc.Name = "site:" + who
	// No expiry: a link re-authorises when it reconnects, and is closed
	// (to reconnect with new permissions) when its site's machines change.
	if account == broker.FleetAccount {
		ids := c.reg.SiteMachines(site)
		uc.Permissions = siteFleetPermissions(ids)
		if err := c.checkLinkSize(req, uc, site, len(ids)); err != nil {
			return nil, err
		}
	}
	c.log.Info("leaf link authorised", "site", site, "account", account, "bound_to", target, "host", ci.Host, "cid", ci.ID)
	if c.onLink != nil {
		c.onLink(leafLink{site: site, account: account, conn: connKey{req.Server.ID, ci.ID}, host: ci.Host})
	}
	c.granted("site", site)
	return uc, nil
}

// Outcomes of siteSecrets.check and checkSiteSum.
const (
	secretOK = iota
	secretWrong
	secretBusy
	secretNotChecked
)

// checkSiteSum compares the SHA-256 of secret with a site's verifier in
// constant time: the cheap check every site made by cc-broker leaf-site
// has, which a flood of wrong secrets cannot make expensive.
func checkSiteSum(want [sha256.Size]byte, secret string) int {
	sum := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(sum[:], want[:]) == 1 {
		return secretOK
	}
	return secretWrong
}

// siteSecretRetry is how long a host that gave a wrong secret is refused
// without a check, from when the check ended.
const siteSecretRetry = 2 * time.Second

// maxSecretFailures bounds the hosts remembered for siteSecretRetry.
const maxSecretFailures = 4096

// siteSecrets checks leaf links' secrets against the sites' bcrypt hashes
// without letting anyone who can reach the leaf port slow the hub's
// admissions. bcrypt (at the cost cc-broker leaf-site uses) takes tens of
// milliseconds of CPU, on the callout workers every admission shares:
// checked per attempt, a flood of wrong secrets blocked hub logins.
// So:
//   - once a site's secret has checked out, its SHA-256 is kept and every
//     later attempt is compared with that in constant time: the hashes
//     are read once at start, so any other secret is wrong, and a link
//     that re-links costs no bcrypt;
//   - before that, at most one bcrypt runs at a time: an attempt that
//     finds one running is refused at once ("busy, retry"; a site's
//     broker retries by itself) instead of queueing;
//   - a host that gave a wrong secret for a site is refused without a
//     check for that site for siteSecretRetry after the check ("not
//     checked", never "wrong"), so one source cannot keep the check busy
//     (many sources can, until the site's first link; and a source
//     sharing the real site's address can delay it: sites made by
//     cc-broker leaf-site carry a SHA-256 verifier instead, checkSiteSum,
//     and never come here).
//
// The zero value is ready to use.
type siteSecrets struct {
	bcrypt sync.Mutex // held while a bcrypt runs (TryLock only)
	// compare is the bcrypt check (nil: bcrypt.CompareHashAndPassword).
	compare func(hash, secret []byte) error

	mu     sync.Mutex
	known  map[string][sha256.Size]byte // site: SHA-256 of its checked secret
	failed map[string]time.Time         // host and site: refused without a check until
}

// check says whether secret is site's, whose bcrypt hash is hash, for a
// link from host; now is the clock.
func (s *siteSecrets) check(site, hash, secret, host string, now func() time.Time) int {
	sum := sha256.Sum256([]byte(secret))
	s.mu.Lock()
	want, known := s.known[site]
	until, failed := s.failed[host+" "+site]
	s.mu.Unlock()
	if known {
		if subtle.ConstantTimeCompare(sum[:], want[:]) == 1 {
			return secretOK
		}
		return secretWrong
	}
	if failed && now().Before(until) {
		return secretNotChecked
	}
	if !s.bcrypt.TryLock() {
		return secretBusy
	}
	compare := s.compare
	if compare == nil {
		compare = bcrypt.CompareHashAndPassword
	}
	err := compare([]byte(hash), []byte(secret))
	s.bcrypt.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.failed == nil || len(s.failed) >= maxSecretFailures {
			s.failed = map[string]time.Time{} // forgetting only costs a check
		}
		s.failed[host+" "+site] = now().Add(siteSecretRetry)
		return secretWrong
	}
	if s.known == nil {
		s.known = map[string][sha256.Size]byte{}
	}
	s.known[site] = sum
	return secretOK
}

// siteFleetPermissions are a site's FLEET link's, as the site sees them
// (the hub reverses them for a leaf link): it may publish only replies of
// its own machines and micro discovery answers, and receives only calls
// to its own machines, broadcasts, the agents' hint and discovery pings.
// Nothing else crosses: no calls, control requests or presence events
// from the site, no calls to or replies from any other machine to it.
func siteFleetPermissions(ids []string) jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add(fleet.DiscoveryReplies())
	p.Sub.Allow.Add(fleet.BroadcastCalls(), fleet.AgentHintSubject)
	p.Sub.Allow.Add(srvSubjects()...)
	for _, id := range ids {
		tok := fleet.MachineToken(id)
		p.Pub.Allow.Add(fleet.MachineReplies(tok))
		p.Sub.Allow.Add(fleet.FnRoot + "." + tok + ".*.*")
	}
	return p
}

// siteMismatch says why machine id, registered to site want, may not
// connect through the brokers of site at ("": the hub).
func siteMismatch(id, want, at string) string {
	switch {
	case want == "":
		return fmt.Sprintf("machine %s is registered to the hub, not to site %s: connect it to the hub, "+
			"or move it with: cc-bench machines add %s --pubkey KEY --site %s --replace", id, at, id, at)
	case at == "":
		return fmt.Sprintf("machine %s is registered to site %s: it connects to that site's broker, not to the hub "+
			"(to move it: cc-bench machines add %s --pubkey KEY --replace)", id, want, id)
	}
	return fmt.Sprintf("machine %s is registered to site %s, not to site %s: connect it to site %s's broker, "+
		"or move it with: cc-bench machines add %s --pubkey KEY --site %s --replace", id, want, at, want, id, at)
}

// leafLinks keeps the live leaf link of each site and account.
type leafLinks struct {
	mu    sync.Mutex
	links map[string]leafLink // site + "." + account
	seq   uint64              // counts links recorded
}

// mark returns the current record count: links recorded after it are
// newer than anything found live since.
func (ll *leafLinks) mark() uint64 {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	return ll.seq
}

// linked records l as its site's link for its account and returns the
// link it replaces, if any.
func (ll *leafLinks) linked(l leafLink) (leafLink, bool) {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	if ll.links == nil {
		ll.links = map[string]leafLink{}
	}
	k := l.site + "." + l.account
	old, had := ll.links[k]
	ll.seq++
	l.seq = ll.seq
	ll.links[k] = l
	return old, had && old.conn != l.conn
}

// link returns site's live link for account.
func (ll *leafLinks) link(site, account string) (leafLink, bool) {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	l, ok := ll.links[site+"."+account]
	return l, ok
}

// onLeafLink keeps one live link per site and account: a newer link
// replaces the older, which is closed, logged and audited. A site broker
// that reconnects is the newer; its old link is dead already and closing
// it fails quietly. Two brokers holding the site's secret replace each
// other in turn, and every round is in the log and the audit.
func (s *Service) onLeafLink(l leafLink) {
	old, replaced := s.links.linked(l)
	if !replaced {
		return
	}
	go func() {
		if err := s.kickOne(context.Background(), old.conn); err != nil {
			s.log.Debug("older leaf link already gone", "site", l.site, "account", l.account, "cid", old.conn.cid, "error", err)
			return
		}
		reason := fmt.Sprintf("a new leaf link for site %s (%s) from %s replaced the live one from %s (connection %d on %s): "+
			"one link per site. If this repeats, two brokers run with site %s's secret: stop the one that is not the site's, "+
			"and if it is not yours create a new secret (cc-broker leaf-site %s)",
			l.site, strings.ToLower(l.account), l.host, old.host, old.conn.cid, old.conn.server, l.site, l.site)
		s.log.Warn("replaced a site's leaf link", "site", l.site, "account", l.account, "new_host", l.host, "old_host", old.host,
			"old_cid", old.conn.cid)
		s.auditRefused("site", l.site, "", old.host, reason)
	}()
}

// onSitesChanged closes the FLEET links of sites whose machines changed:
// each reconnects at once and is authorised with its new permissions.
func (s *Service) onSitesChanged(sites ...string) {
	for _, site := range sites {
		l, ok := s.links.link(site, broker.FleetAccount)
		if !ok {
			continue
		}
		go func() {
			s.log.Info("a site's machines changed; its FLEET link re-authorises", "site", site)
			if err := s.kickOne(context.Background(), l.conn); err != nil {
				s.log.Debug("site FLEET link already gone", "site", site, "error", err)
			}
		}()
	}
}

// leafzData is the part of a broker's LEAFZ answer read here.
type leafzData struct {
	Leafs []struct {
		ID      uint64 `json:"id"`
		Account string `json:"account"`
		IP      string `json:"ip"`
	} `json:"leafs"`
}

// checkLinks finds, at every resync, each site's live leaf links on the
// hub's brokers (LEAFZ for the site's own accounts; the FLEET CONNZ in
// snap, where a link's user is its name "site:<site>.fleet") and keeps
// one per site and account: links made before this service started (or
// whose callout it did not see) are known from here on, and a second one
// is closed, logged and audited like a replaced link.
//
// since is the links' mark taken before snap was asked for: a link
// recorded after it is newer than anything found.
func (s *Service) checkLinks(ctx context.Context, snap map[string]map[uint64]string, since uint64) {
	accounts := map[string]leafLink{}
	for _, site := range s.cfg.LeafSites {
		accounts[broker.SiteSysAccount(site.Name)] = leafLink{site: site.Name, account: broker.SystemAccount}
		accounts[broker.SiteControlAccount(site.Name)] = leafLink{site: site.Name, account: broker.ControlAccount}
	}
	var seen []leafLink
	for server, conns := range snap {
		if site, _ := serverSite(server); site != "" {
			continue
		}
		for cid, user := range conns {
			if site, acc, ok := broker.ParseLeafUser(strings.TrimPrefix(user, "site:")); ok && strings.HasPrefix(user, "site:") && acc == broker.FleetAccount {
				seen = append(seen, leafLink{site: site, account: acc, conn: connKey{server, cid}})
			}
		}
		m, err := s.sys.RequestWithContext(withTimeout(ctx, 2*time.Second), serverRequest(server, "LEAFZ"), nil)
		if err != nil {
			s.log.Debug("LEAFZ failed", "server", server, "error", err)
			continue
		}
		var r serverAPIResponse
		var lz leafzData
		if json.Unmarshal(m.Data, &r) != nil || r.Error != nil || json.Unmarshal(r.Data, &lz) != nil {
			continue
		}
		for _, l := range lz.Leafs {
			if link, ok := accounts[l.Account]; ok {
				link.conn, link.host = connKey{server, l.ID}, l.IP
				seen = append(seen, link)
			}
		}
	}
	for _, extra := range s.links.adopt(seen, since) {
		if err := s.kickOne(ctx, extra.conn); err != nil {
			continue
		}
		reason := fmt.Sprintf("site %s had two live leaf links (%s); the one from %s (connection %d on %s) was closed: "+
			"one link per site. If this repeats, two brokers run with site %s's secret: stop the one that is not the site's, "+
			"and if it is not yours create a new secret (cc-broker leaf-site %s)",
			extra.site, strings.ToLower(extra.account), orUnknown(extra.host), extra.conn.cid, extra.conn.server, extra.site, extra.site)
		s.log.Warn("closed a site's second leaf link", "site", extra.site, "account", extra.account, "cid", extra.conn.cid)
		s.auditRefused("site", extra.site, "", extra.host, reason)
	}
}

// adopt folds the links found live (by a look that began at mark since)
// into what is kept: for each site and account, the recorded link if it
// is among them or was recorded after the look began, else the newest
// found (highest connection id); it returns the others.
func (ll *leafLinks) adopt(seen []leafLink, since uint64) []leafLink {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	if ll.links == nil {
		ll.links = map[string]leafLink{}
	}
	groups := map[string][]leafLink{}
	for _, l := range seen {
		k := l.site + "." + l.account
		groups[k] = append(groups[k], l)
	}
	var extra []leafLink
	for k, ls := range groups {
		keep, ok := ll.links[k]
		found := ok && keep.seq > since
		for _, l := range ls {
			if ok && l.conn == keep.conn {
				found = true
			}
		}
		if !found {
			keep = ls[0]
			for _, l := range ls[1:] {
				if l.conn.cid > keep.conn.cid {
					keep = l
				}
			}
			ll.links[k] = keep
		}
		for _, l := range ls {
			if l.conn != keep.conn {
				extra = append(extra, l)
			}
		}
	}
	return extra
}
