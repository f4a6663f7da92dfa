package controlsvc

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
)

// A site's FLEET link gets two subjects per machine of the site
// (siteFleetPermissions), all in one user JWT inside the callout's
// response, and the response is one message: past the broker's max
// payload (1 MiB by default: some 6,000 machines) it cannot be sent, and
// the link would never be authorised with nothing said. linkSize finds
// that before the response is sent, and refuses the link with the reason
// in an ERROR log line and the audit.

// linkSizeLogEvery spaces the ERROR lines and audit records about one
// site's link being too large: the site's broker retries every second or
// so, and each retry is refused the same way.
const linkSizeLogEvery = time.Minute

// sealOverhead is what sealing the response for the broker's xkey adds:
// a version tag, a nonce and the box's tag.
const sealOverhead = 4 + 24 + 16

// linkSize checks a site's FLEET link response against the broker's max
// payload.
type linkSize struct {
	// maxPayload is the broker's limit on one message (the connection
	// the callout answers on knows it).
	maxPayload func() int64

	mu     sync.Mutex
	logged map[string]time.Time // site: when last logged and audited
}

func newLinkSize(maxPayload func() int64) *linkSize {
	return &linkSize{maxPayload: maxPayload, logged: map[string]time.Time{}}
}

// checkLinkSize refuses site's FLEET link, whose claims uc give its
// machines machines' subjects, when the callout response carrying them
// would exceed the broker's max payload. It encodes the response as
// authorizeAt will, to measure it.
func (c *callout) checkLinkSize(req *jwt.AuthorizationRequestClaims, uc *jwt.UserClaims, site string, machines int) error {
	if c.linkSize == nil || c.linkSize.maxPayload == nil || c.init() != nil {
		return nil
	}
	limit := c.linkSize.maxPayload()
	if limit <= 0 {
		return nil
	}
	tok, err := uc.Encode(c.signer)
	if err != nil {
		return nil // authorizeAt reports it
	}
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	resp.Jwt = tok
	out, err := resp.Encode(c.signer)
	if err != nil {
		return nil
	}
	size := int64(len(out)) + sealOverhead
	if size <= limit {
		return nil
	}
	fit := int64(machines) * limit / size
	reason := fmt.Sprintf("site %s's FLEET link cannot be authorised: the permissions for its %d machines make a %d-byte callout response, "+
		"more than the broker's max payload of %d bytes (about %d machines fit). Split the site: move machines to another site "+
		"(cc-broker leaf-site NAME, then cc-bench machines add ID --pubkey KEY --site NAME --replace), or raise the hub brokers' max payload",
		site, machines, size, limit, fit)
	now := c.clock()
	c.linkSize.mu.Lock()
	last, seen := c.linkSize.logged[site]
	due := !seen || now.Sub(last) >= linkSizeLogEvery || now.Before(last)
	if due {
		c.linkSize.logged[site] = now
	}
	c.linkSize.mu.Unlock()
	if !due {
		return errors.New(reason)
	}
	c.log.Error("site link too large for the broker's max payload; refused", "site", site, "machines", machines,
		"response_bytes", size, "max_payload", limit, "machines_that_fit", fit,
		"fix", "split the site, or raise the hub brokers' max payload")
	return c.refuse("site", site, "", req.ClientInformation.Host, reason)
}
