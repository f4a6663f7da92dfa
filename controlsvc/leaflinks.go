package controlsvc

import (
	"context"
	"fmt"
	"strings"
	"sync"

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
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(opts.Password)) != nil {
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
		uc.Permissions = siteFleetPermissions(c.reg.SiteMachines(site))
	}
	c.log.Info("leaf link authorised", "site", site, "account", account, "bound_to", target, "host", ci.Host, "cid", ci.ID)
	if c.onLink != nil {
		c.onLink(leafLink{site: site, account: account, conn: connKey{req.Server.ID, ci.ID}, host: ci.Host})
	}
	c.granted("site", site)
	return uc, nil
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
	p.Sub.Allow.Add(fleet.AllRoot+".*.*", fleet.AgentHintSubject)
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
