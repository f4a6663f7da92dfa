package fleet

import (
	"fmt"
	"strings"
)

// A remote site joins the hub through a leaf link per account (see
// broker/leaf.go). At the hub each site's system and control links are
// bound to accounts of the site's own, and what crosses from there into
// the hub's accounts is renamed under the site's name, so the control
// service knows which site sent it from the subject alone, whatever the
// message says.

// MaxSiteLen bounds a site's name.
const MaxSiteLen = 64

// ValidateSiteName reports whether name may name a remote site: 1–64
// letters, digits, '-' or '_'.
func ValidateSiteName(name string) error {
	if name == "" {
		return fmt.Errorf("site name is empty")
	}
	if len(name) > MaxSiteLen {
		return fmt.Errorf("site name %.20q… is %d characters long; at most %d are allowed", name, len(name), MaxSiteLen)
	}
	for i, r := range name {
		if !isAlnum(r) && r != '-' && r != '_' {
			return fmt.Errorf("site name %q has %q at position %d; use letters, digits, '-' or '_'", name, r, i)
		}
	}
	return nil
}

// siteRoot prefixes the subjects a site's links are renamed to at the hub.
const siteRoot = Prefix + ".site"

// SiteAuthSubject is where the auth callout requests of site's broker
// arrive at the hub's control service: the hub imports the site's
// $SYS.REQ.USER.AUTH to it.
func SiteAuthSubject(site string) string { return siteRoot + "." + site + ".auth" }

// SiteAuthWildcard matches every site's callout requests.
const SiteAuthWildcard = siteRoot + ".*.auth"

// ParseSiteAuthSubject returns the site a callout request came from.
func ParseSiteAuthSubject(subject string) (string, error) {
	rest, ok := strings.CutPrefix(subject, siteRoot+".")
	site, tail, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || tail != "auth" || ValidateSiteName(site) != nil {
		return "", fmt.Errorf("subject %q is not a site's callout subject (%s)", subject, SiteAuthWildcard)
	}
	return site, nil
}

// SiteSysSubject is the name, in the hub's system account, of system
// subject sys as it is at site: its events arrive there, and requests
// sent there reach the site's broker only.
func SiteSysSubject(site, sys string) string { return siteRoot + "." + site + ".sys." + sys }

// SiteSysWildcard matches system subject sys at every site.
func SiteSysWildcard(sys string) string { return siteRoot + ".*.sys." + sys }

// ParseSiteSysSubject splits a SiteSysSubject into the site and the
// system subject.
func ParseSiteSysSubject(subject string) (site, sys string, err error) {
	rest, ok := strings.CutPrefix(subject, siteRoot+".")
	site, sys, ok2 := strings.Cut(rest, ".sys.")
	if !ok || !ok2 || sys == "" || ValidateSiteName(site) != nil {
		return "", "", fmt.Errorf("subject %q is not a site's system subject (%s)", subject, SiteSysWildcard(">"))
	}
	return site, sys, nil
}
