package broker

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"
)

// A remote site joins the hub through leaf-node connections, one per
// account: FLEET carries calls and replies, CONTROL carries the site
// broker's auth callout requests to the control service behind the hub,
// and SYS carries the site broker's connect/disconnect events, so presence
// sees the site's machines come and go. Agents at the site connect to the
// site's broker; nothing at the site talks to the hub but that broker.
//
// The hub authenticates each leaf connection by user name and password
// (never through the auth callout): the user is "<site>.<account>" and
// the password the site's secret, which the hub keeps only as a bcrypt
// hash. A site broker is trusted like a cluster peer — it runs the auth
// callout for its own clients and publishes system events — so its
// secret is a broker credential, not something to hand to machines.

// LeafSite is a remote site the hub accepts on its leaf listener.
type LeafSite struct {
	// Name identifies the site (letters, digits, '-' and '_').
	Name string `json:"site"`
	// PasswordBcrypt is the bcrypt hash of the site's secret
	// (cc-broker leaf-site NAME prints it).
	PasswordBcrypt string `json:"password_bcrypt"`
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
		accounts := map[string]*server.Account{}
		for _, a := range opts.Accounts {
			accounts[a.Name] = a
		}
		seen := map[string]bool{}
		for _, s := range cfg.LeafSites {
			if !siteName.MatchString(s.Name) {
				return fmt.Errorf("broker: leaf site name %q: use 1 to 64 letters, digits, '-' or '_'", s.Name)
			}
			if seen[s.Name] {
				return fmt.Errorf("broker: leaf site %q listed twice", s.Name)
			}
			seen[s.Name] = true
			if !strings.HasPrefix(s.PasswordBcrypt, "$2") {
				return fmt.Errorf("broker: leaf site %q: password_bcrypt is not a bcrypt hash (cc-broker leaf-site %s prints one)", s.Name, s.Name)
			}
			for _, acc := range leafAccounts {
				opts.LeafNode.Users = append(opts.LeafNode.Users, &server.User{
					Username: LeafUser(s.Name, acc), Password: s.PasswordBcrypt, Account: accounts[acc],
				})
			}
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
				u.User = url.UserPassword(LeafUser(h.Site, acc), h.Secret)
				r.URLs = append(r.URLs, u)
			}
			opts.LeafNode.Remotes = append(opts.LeafNode.Remotes, r)
		}
	}
	return nil
}

// NewLeafSite creates a site's secret and the bcrypt hash the hub keeps.
func NewLeafSite(name string) (secret string, site LeafSite, err error) {
	if !siteName.MatchString(name) {
		return "", LeafSite{}, fmt.Errorf("site name %q: use 1 to 64 letters, digits, '-' or '_'", name)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", LeafSite{}, err
	}
	secret = base64.RawURLEncoding.EncodeToString(b)
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.DefaultCost)
	if err != nil {
		return "", LeafSite{}, err
	}
	return secret, LeafSite{Name: name, PasswordBcrypt: string(hash)}, nil
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
		return nil, fmt.Errorf("leaf sites %s: %w (want a JSON list of {\"site\": NAME, \"password_bcrypt\": HASH})", path, err)
	}
	return sites, nil
}

// ReadLeafSecret reads a site's secret file (written by
// cc-broker leaf-site); it must not be readable by group or others.
func ReadLeafSecret(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("site secret: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("site secret %s is readable by others (mode %v); chmod 600 it", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("site secret: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("site secret %s is empty", path)
	}
	return s, nil
}
