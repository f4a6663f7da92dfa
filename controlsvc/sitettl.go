package controlsvc

import (
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
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
// Which broker asks: every authorization request carries the asking
// server's name, id and cluster name. This service is connected to a hub
// broker; a request comes from the hub when its server is that broker
// (same id) or one routed to it (same cluster name, when there is one).
// A site's broker reaches the hub only as a leaf node, and nats-server
// refuses a leaf connection whose cluster name is the hub's, so a site's
// broker never matches. Anything else, including a request while this
// service is not connected, counts as a site: the rule fails short.

// hubServer returns the id and cluster name of the broker nc is connected
// to, which is the hub's.
func hubServer(nc *nats.Conn) func() (id, cluster string) {
	return func() (string, string) { return nc.ConnectedServerId(), nc.ConnectedClusterName() }
}

// fromHub reports whether server, the broker that sent an authorization
// request, is one of the hub's: the broker with id hubID, or one in its
// cluster hubCluster.
func fromHub(server jwt.ServerID, hubID, hubCluster string) bool {
	if hubCluster != "" && server.Cluster == hubCluster {
		return true
	}
	return hubID != "" && server.ID == hubID
}

// userTTL is how long the credentials issued for a connection at server
// live: the site TTL when server is not a hub broker.
func (c *callout) userTTL(server jwt.ServerID) time.Duration {
	if c.siteTTL <= 0 || c.siteTTL >= c.ttl {
		return c.ttl
	}
	var id, cluster string
	if c.hub != nil {
		id, cluster = c.hub()
	}
	if fromHub(server, id, cluster) {
		return c.ttl
	}
	return c.siteTTL
}
