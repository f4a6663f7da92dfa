package controlsvc

import (
	"time"
)

// DefaultSiteUserTTL is Config.SiteUserTTL's default.
const DefaultSiteUserTTL = 5 * time.Minute

// Credentials for a connection at a remote site live at most SiteUserTTL.
//
// Removing an operator or a machine closes its live connections through
// the brokers (a KICK), and a site's broker hears it only over its leaf
// link to the hub. While that link is down the site's broker goes on
// serving what it admitted, up to the expiry of the user JWT the callout
// issued; when the JWT expires the broker closes the connection and the
// client must be authorised again, which needs the hub. So the shorter
// lifetime bounds how long a removal at a cut-off site waits: at most
// SiteUserTTL after the removal (the last JWT was issued before the cut),
// plus the skew between this service's clock and the site broker's. The
// price: a site cut off for longer than SiteUserTTL loses its
// connections until the link returns, as it cannot admit new ones
// meanwhile anyway.
//
// Which broker asks is structural: a remote site's broker reaches the
// callout only through its own CONTROL link, whose requests arrive renamed
// under the site (fleet.SiteAuthSubject, see broker/leaf.go), so the site
// of a request is known from its subject and cannot be claimed by a
// request's contents.

// userTTL is how long the credentials issued for a connection at site
// ("" for the hub) live: the site TTL at a remote site.
func (c *callout) userTTL(site string) time.Duration {
	if site == "" || c.siteTTL <= 0 || c.siteTTL >= c.ttl {
		return c.ttl
	}
	return c.siteTTL
}
