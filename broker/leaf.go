package broker

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/keyfile"
)

// A remote site joins the hub through leaf-node connections, one per
// account: FLEET carries calls and replies, CONTROL carries the site
// broker's auth callout requests to the control service behind the hub,
// and SYS carries the site broker's connect/disconnect events, so presence
// sees the site's machines come and go. Agents at the site connect to the
// site's broker; nothing at the site talks to the hub but that broker.
//
// A site broker is trusted with its own site only: whoever holds a site's
// secret (or runs its broker) must not reach beyond it. So at the hub:
//
//   - The site's SYS and CONTROL links are bound to accounts of the site's
//     own (SiteSysAccount, SiteControlAccount), not to the hub's SYS and
//     CONTROL. Only what is wired below crosses into the hub's accounts:
//     the site's connect, disconnect and shutdown events arrive in SYS
//     renamed under fleet.SiteSysSubject(site, …), so the control service
//     knows the site of every event by its subject, and the control service
//     reaches the site's brokers (PING, CONNZ, KICK) only through
//     fleet.SiteSysSubject requests, which go to that site alone. The site
//     can neither request nor kick anything at the hub, nor see the hub's
//     events. The site's callout requests reach the control service on
//     fleet.SiteAuthSubject(site), through a service import, so the site
//     sees no other request or reply in CONTROL (no audit, no $JS API, no
//     control subjects, no callout queue).
//   - Every leaf link is authorised by the auth callout (the hub has no
//     leaf users of its own): the control service checks the site's secret
//     against the bcrypt hash it holds (the same leaf sites file), binds
//     the link to its account, keeps one live link per site and account
//     (a newer one replaces the older, logged and audited), and gives the
//     FLEET link permissions computed from the registry: calls to and
//     replies from the site's own machines only.
//
// A site broker runs the auth callout for its own clients through the
// hub's control service and publishes system events; its secret is a
// broker credential, not something to hand to machines.

// LeafSite is a remote site the hub accepts on its leaf listener.
type LeafSite struct {
	// Name identifies the site (letters, digits, '-' and '_').
	Name string `json:"site"`
	// SecretSHA256 is the hex SHA-256 of the site's secret (cc-broker
	// leaf-site NAME prints it). The secret is 256 random bits, so a
	// fast hash is as hard to reverse as a slow one, and the control
	// service checks a link against it in constant time: nobody who
	// reaches the leaf port can make that check cost the hub anything.
	SecretSHA256 string `json:"secret_sha256,omitempty"`
	// PasswordBcrypt is the bcrypt hash of the secret, as entries made
	// before SecretSHA256 existed carry. It is still accepted, but each
	// check of it costs tens of milliseconds, so the control service runs
	// one at a time until the site's first link: recreate such a site
	// (cc-broker leaf-site NAME) to get the fast check.
	PasswordBcrypt string `json:"password_bcrypt,omitempty"`
}

// Verifier returns the SHA-256 of the site's secret from SecretSHA256,
// and false when the entry has none (or it is not 64 hex digits).
func (s LeafSite) Verifier() ([sha256.Size]byte, bool) {
	var sum [sha256.Size]byte
	b, err := hex.DecodeString(s.SecretSHA256)
	if err != nil || len(b) != sha256.Size {
		return sum, false
	}
	copy(sum[:], b)
	return sum, true
}

// check says what is wrong with the entry's secret hashes, if anything.
func (s LeafSite) check() error {
	if s.SecretSHA256 == "" && s.PasswordBcrypt == "" {
		return fmt.Errorf("broker: leaf site %q has neither secret_sha256 nor password_bcrypt (cc-broker leaf-site %s prints the entry)", s.Name, s.Name)
	}
	if s.SecretSHA256 != "" && s.PasswordBcrypt != "" {
		// Two hashes could be of two secrets (one left from before a
		// rotation): only one may say which secret is the site's.
		return fmt.Errorf("broker: leaf site %q has both secret_sha256 and password_bcrypt: keep the entry cc-broker leaf-site %s printed (secret_sha256) and remove password_bcrypt", s.Name, s.Name)
	}
	if _, ok := s.Verifier(); s.SecretSHA256 != "" && !ok {
		return fmt.Errorf("broker: leaf site %q: secret_sha256 is not 64 hex digits (cc-broker leaf-site %s prints the entry)", s.Name, s.Name)
	}
	if s.PasswordBcrypt != "" && !strings.HasPrefix(s.PasswordBcrypt, "$2") {
		return fmt.Errorf("broker: leaf site %q: password_bcrypt is not a bcrypt hash (cc-broker leaf-site %s prints a new entry)", s.Name, s.Name)
	}
	return nil
}

// LeafHub is the hub a site broker links to.
type LeafHub struct {
	// URLs are the hub's leaf listeners (nats-leaf://host:7422); with a
	// hub cluster, list several.
	URLs []string
	// Site is this site's name, as listed in the hub's LeafSites.
	Site string
	// Secret is the site's secret whose hash the hub holds.
	Secret string
}

// leafAccounts are linked between a site and the hub, in this order.
var leafAccounts = []string{FleetAccount, ControlAccount, SystemAccount}

var siteName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// LeafUser is the user name a site's leaf connection for account uses.
func LeafUser(site, account string) string { return site + "." + strings.ToLower(account) }

func leafOptions(cfg *Config, opts *server.Options) error {
	if cfg.LeafListen != "" {
		h, p, err := splitHostPort("leaf listen", cfg.LeafListen)
		if err != nil {
			return err
		}
		if len(cfg.LeafSites) == 0 {
			return errors.New("broker: a leaf listen address needs at least one leaf site (create one with: cc-broker leaf-site NAME)")
		}
		opts.LeafNode.Host, opts.LeafNode.Port = h, p
		seen := map[string]bool{}
		for _, s := range cfg.LeafSites {
			if !siteName.MatchString(s.Name) {
				return fmt.Errorf("broker: leaf site name %q: use 1 to 64 letters, digits, '-' or '_'", s.Name)
			}
			if seen[s.Name] {
				return fmt.Errorf("broker: leaf site %q listed twice", s.Name)
			}
			seen[s.Name] = true
			if err := s.check(); err != nil {
				return err
			}
			// The site's links are authorised by the callout (see the
			// top of this file); its SYS and CONTROL links land in
			// accounts of its own, wired in wireLeafSites.
			opts.Accounts = append(opts.Accounts, server.NewAccount(SiteSysAccount(s.Name)), server.NewAccount(SiteControlAccount(s.Name)))
		}
	} else if len(cfg.LeafSites) > 0 {
		return errors.New("broker: leaf sites given without a leaf listen address")
	}
	if h := cfg.Hub; h != nil {
		if cfg.LeafListen != "" {
			return errors.New("broker: a broker is either a hub (leaf listen) or a site (hub), not both")
		}
		if !siteName.MatchString(h.Site) {
			return fmt.Errorf("broker: site name %q: use 1 to 64 letters, digits, '-' or '_'", h.Site)
		}
		if h.Secret == "" {
			return fmt.Errorf("broker: site %q has no secret for the hub", h.Site)
		}
		if len(h.URLs) == 0 {
			return errors.New("broker: a site needs the hub's leaf URL (nats-leaf://hub:7422)")
		}
		for _, acc := range leafAccounts {
			r := &server.RemoteLeafOpts{LocalAccount: acc}
			for _, raw := range h.URLs {
				u, err := url.Parse(raw)
				if err != nil || u.Host == "" || (u.Scheme != "nats-leaf" && u.Scheme != "nats" && u.Scheme != "tls") {
					return fmt.Errorf("broker: hub URL %q: want nats-leaf://host:port", raw)
				}
				if u.User != nil {
					u.User = nil
					return fmt.Errorf("broker: hub URL %s carries credentials: give none there (they would be logged); the site's secret is read from --site-secret-file", u)
				}
				u.User = url.UserPassword(LeafUser(h.Site, acc), h.Secret)
				r.URLs = append(r.URLs, u)
			}
			opts.LeafNode.Remotes = append(opts.LeafNode.Remotes, r)
		}
	}
	return nil
}

// SiteSysAccount is the hub account site's SYS link is bound to.
func SiteSysAccount(site string) string { return "SITE_" + site + "_SYS" }

// SiteControlAccount is the hub account site's CONTROL link is bound to.
func SiteControlAccount(site string) string { return "SITE_" + site + "_CONTROL" }

// LeafLinkAccount is the hub account the callout binds site's link for
// the site-side account to: the site's own for SYS and CONTROL, FLEET for
// FLEET (confined by the permissions the callout gives it). ok is false
// for any other account.
func LeafLinkAccount(site, account string) (string, bool) {
	switch account {
	case SystemAccount:
		return SiteSysAccount(site), true
	case ControlAccount:
		return SiteControlAccount(site), true
	case FleetAccount:
		return FleetAccount, true
	}
	return "", false
}

// ParseLeafUser splits a leaf link's user name into the site and the
// site-side account (SYS, CONTROL or FLEET).
func ParseLeafUser(user string) (site, account string, ok bool) {
	site, acc, found := strings.Cut(user, ".")
	if !found || !siteName.MatchString(site) {
		return "", "", false
	}
	for _, a := range leafAccounts {
		if strings.ToLower(a) == acc {
			return site, a, true
		}
	}
	return "", "", false
}

// siteSysEvents are the system events a site's broker sends that reach
// the hub's SYS account, renamed under fleet.SiteSysSubject.
var siteSysEvents = []string{
	fleet.AccountConnectSubject(FleetAccount),
	fleet.AccountDisconnectSubject(FleetAccount),
	fleet.ServerShutdownWildcard,
}

// siteSysRequests are the system requests the hub's SYS account may send
// to a site's brokers, as fleet.SiteSysSubject(site, request).
var siteSysRequests = []string{
	fleet.ServerPingSubject,
	fleet.ServerRequestWildcard("CONNZ"),
	fleet.ServerRequestWildcard("KICK"),
}

// wireLeafSites connects each site's own accounts to the hub's (see the
// top of this file). It runs once the server is up: the server's own
// per-account system imports, added at start, would otherwise take the
// site's CONNZ export for a cycle. A link is authorised by the control
// service's callout, a round trip that takes longer than this.
func wireLeafSites(srv *server.Server, sites []LeafSite) error {
	lookup := func(name string) (*server.Account, error) {
		a, err := srv.LookupAccount(name)
		if err != nil {
			return nil, fmt.Errorf("broker: account %s: %w", name, err)
		}
		return a, nil
	}
	sys, err := lookup(SystemAccount)
	if err != nil {
		return err
	}
	ctl, err := lookup(ControlAccount)
	if err != nil {
		return err
	}
	for _, s := range sites {
		ssys, err := lookup(SiteSysAccount(s.Name))
		if err != nil {
			return err
		}
		sctl, err := lookup(SiteControlAccount(s.Name))
		if err != nil {
			return err
		}
		wire := func(what string, err error) error {
			if err != nil {
				return fmt.Errorf("broker: leaf site %s: %s: %w", s.Name, what, err)
			}
			return nil
		}
		for _, ev := range siteSysEvents {
			if err := wire("export "+ev, ssys.AddStreamExport(ev, []*server.Account{sys})); err != nil {
				return err
			}
			if err := wire("import "+ev, sys.AddMappedStreamImport(ssys, ev, fleet.SiteSysSubject(s.Name, ev))); err != nil {
				return err
			}
		}
		for _, req := range siteSysRequests {
			if err := wire("export "+req, ssys.AddServiceExport(req, []*server.Account{sys})); err != nil {
				return err
			}
			if err := wire("import "+req, sys.AddServiceImport(ssys, fleet.SiteSysSubject(s.Name, req), req)); err != nil {
				return err
			}
		}
		auth := fleet.SiteAuthSubject(s.Name)
		if err := wire("export "+auth, ctl.AddServiceExport(auth, []*server.Account{sctl})); err != nil {
			return err
		}
		if err := wire("import "+auth, sctl.AddServiceImport(ctl, fleet.AuthCalloutSubject, auth)); err != nil {
			return err
		}
	}
	return nil
}

// NewLeafSite creates a site's secret and the SHA-256 of it that the hub's
// leaf sites file keeps.
func NewLeafSite(name string) (secret string, site LeafSite, err error) {
	if !siteName.MatchString(name) {
		return "", LeafSite{}, fmt.Errorf("site name %q: use 1 to 64 letters, digits, '-' or '_'", name)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", LeafSite{}, err
	}
	secret = base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(secret))
	return secret, LeafSite{Name: name, SecretSHA256: hex.EncodeToString(sum[:])}, nil
}

// LoadLeafSites reads a JSON list of LeafSite.
func LoadLeafSites(path string) ([]LeafSite, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("leaf sites: %w", err)
	}
	var sites []LeafSite
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sites); err != nil {
		return nil, fmt.Errorf("leaf sites %s: %w (want a JSON list of {\"site\": NAME, \"secret_sha256\": HEX} as cc-broker leaf-site prints)", path, err)
	}
	for _, s := range sites {
		if !siteName.MatchString(s.Name) {
			return nil, fmt.Errorf("leaf sites %s: site name %q: use 1 to 64 letters, digits, '-' or '_'", path, s.Name)
		}
		if err := s.check(); err != nil {
			return nil, fmt.Errorf("leaf sites %s: %w", path, err)
		}
	}
	return sites, nil
}

// ReadLeafSecret reads a site's secret file (written by
// cc-broker leaf-site); it must not be readable by group or others.
func ReadLeafSecret(path string) (string, error) {
	b, err := keyfile.Read("site secret", path)
	if errors.Is(err, keyfile.ErrUnsafe) {
		return "", err
	}
	if err != nil {
		return "", fmt.Errorf("site secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("site secret %s is empty", path)
	}
	return s, nil
}
