package geo

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/fleet"
)

const testSites = `[
  {"cidr": "10.0.0.0/8", "site": "corp", "country_code": "us"},
  {"cidr": "10.20.0.0/16", "site": "nb-office", "city": "New Brunswick", "region": "New Jersey",
   "country": "United States", "country_code": "US", "latitude": 40.49, "longitude": -74.45},
  {"cidr": "10.20.5.0/24", "site": "nb-lab", "city": "New Brunswick"},
  {"cidr": "10.20.5.7", "site": "nb-lab-bench"},
  {"cidr": "127.0.0.2/32", "city": "Zurich", "country_code": "CH"},
  {"cidr": "127.0.0.3", "city": "Tokyo", "country_code": "JP"},
  {"cidr": "::ffff:192.168.7.0/120", "site": "mapped-lab"},
  {"cidr": "2001:db8::/32", "site": "v6-corp"},
  {"cidr": "2001:db8:20::/48", "site": "nb-office-v6", "country_code": "US"},
  {"cidr": "::1/128", "site": "loopback-v6"},
  {"cidr": "0.0.0.0/0", "site": "elsewhere-v4"}
]`

func TestSitesMostSpecificWins(t *testing.T) {
	l, err := Open("", writeFile(t, "sites.json", testSites))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct{ ip, site, city, cc string }{
		{"10.1.2.3", "corp", "", "US"},
		{"10.20.1.1", "nb-office", "New Brunswick", "US"},
		{"10.20.5.1", "nb-lab", "New Brunswick", ""},
		{"10.20.5.7", "nb-lab-bench", "", ""},
		{"::ffff:10.20.5.7", "nb-lab-bench", "", ""}, // IPv4-mapped address
		{"127.0.0.2", "", "Zurich", "CH"},
		{"127.0.0.3", "", "Tokyo", "JP"},
		{"127.0.0.1", "elsewhere-v4", "", ""},
		{"192.168.7.9", "mapped-lab", "", ""}, // IPv4-mapped network
		{"2001:db8:1::1", "v6-corp", "", ""},
		{"2001:db8:20::1", "nb-office-v6", "", "US"},
		{"::1", "loopback-v6", "", ""},
		{"2001:db9::1", "", "", ""}, // no IPv6 default: 0.0.0.0/0 is IPv4's
		{"[::1]", "loopback-v6", "", ""},
		{"[2001:db8::1]:4222", "v6-corp", "", ""},
		{"10.20.5.7:4222", "nb-lab-bench", "", ""},
		{"fe80::1%eth0", "", "", ""},
	} {
		got := l.Locate(tc.ip)
		if tc.site == "" && tc.city == "" {
			if got != nil {
				t.Errorf("Locate(%q) = %+v, want nil", tc.ip, got)
			}
			continue
		}
		if got == nil || got.Site != tc.site || got.City != tc.city || got.CountryCode != tc.cc || got.Source != fleet.LocationFromSites {
			t.Errorf("Locate(%q) = %+v, want site %q city %q country_code %q from sites", tc.ip, got, tc.site, tc.city, tc.cc)
		}
	}
	full := l.Locate("10.20.9.9")
	want := fleet.Location{Site: "nb-office", City: "New Brunswick", Region: "New Jersey", Country: "United States", CountryCode: "US",
		Latitude: 40.49, Longitude: -74.45, Source: fleet.LocationFromSites}
	if full == nil || *full != want {
		t.Errorf("Locate(10.20.9.9) = %+v, want %+v", full, want)
	}
	if got := l.Locate("10.1.1.1"); got.Country != "United States" {
		t.Errorf("country from code: %+v", got)
	}
	// The result is the caller's: changing it changes no later answer.
	full.City = "changed"
	if again := l.Locate("10.20.9.9"); again.City != "New Brunswick" {
		t.Errorf("a caller's change leaked into the map: %+v", again)
	}
	if src := l.Sources(); len(src) != 1 || src[0].Entries != 11 || src[0].Kind != fleet.LocationFromSites {
		t.Errorf("Sources() = %+v", src)
	}
}

func TestSitesRefused(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		want       []string
	}{
		{"not an array", `{"cidr":"10.0.0.0/8","site":"x"}`, []string{"want a JSON array"}},
		{"empty file", ``, []string{"want a JSON array"}},
		{"bad cidr", "[\n {\"cidr\":\"10.0.0.0/8\",\"site\":\"a\"},\n {\"cidr\":\"10.0.0.300/24\",\"site\":\"b\"}\n]",
			[]string{"entry 2 (line 3)", `"10.0.0.300/24" is not a network`}},
		{"bad address", `[{"cidr":"nb-office","site":"b"}]`, []string{"entry 1 (line 1)", `"nb-office" is not a network or an address`}},
		{"prefix too long", `[{"cidr":"10.0.0.0/33","site":"b"}]`, []string{`"10.0.0.0/33" is not a network`}},
		{"host bits", `[{"cidr":"10.20.1.0/16","site":"b"}]`, []string{"bits set past /16", "did you mean 10.20.0.0/16?"}},
		{"zone", `[{"cidr":"fe80::1%eth0","site":"b"}]`, []string{`"fe80::1%eth0" is not a network or an address`}},
		{"no cidr", `[{"site":"b"}]`, []string{`no "cidr"`}},
		{"duplicate", "[\n{\"cidr\":\"10.20.0.0/16\",\"site\":\"a\"},\n{\"cidr\":\"10.9.0.0/16\",\"site\":\"c\"},\n{\"cidr\":\" 10.20.0.0/16\",\"site\":\"b\"}]",
			[]string{"entry 3 (line 4)", "network 10.20.0.0/16 is also entry 1 (line 2); keep one"}},
		{"duplicate mapped", `[{"cidr":"192.168.7.0/24","site":"a"},{"cidr":"::ffff:192.168.7.0/120","site":"b"}]`,
			[]string{"entry 2", "network 192.168.7.0/24 is also entry 1"}},
		{"duplicate host", `[{"cidr":"10.0.0.1","site":"a"},{"cidr":"10.0.0.1/32","site":"b"}]`, []string{"network 10.0.0.1/32 is also entry 1"}},
		{"mapped too wide", `[{"cidr":"::ffff:0:0/90","site":"a"}]`, []string{"bits set past /90"}},
		{"unknown field", "[\n  {\"cidr\":\"10.0.0.0/8\",\n   \"cty\":\"Zurich\"}]", []string{"entry 1 (line 2)", `unknown field "cty"`, "the fields are cidr, site"}},
		{"wrong type", `[{"cidr":"10.0.0.0/8","city":7}]`, []string{`"city": want a string, got a JSON number`}},
		{"wrong type latitude", `[{"cidr":"10.0.0.0/8","site":"a","latitude":"40.5","longitude":1}]`, []string{`"latitude": want a number, got a JSON string`}},
		{"entry not object", `["10.0.0.0/8"]`, []string{"entry 1", "want an object like", "got a JSON string"}},
		{"names nothing", `[{"cidr":"10.0.0.0/8","site":"  "}]`, []string{"says nothing of the place"}},
		{"bad country code", `[{"cidr":"10.0.0.0/8","country_code":"USA"}]`, []string{`"USA" is not an ISO 3166-1 alpha-2 code`}},
		{"unknown country code", `[{"cidr":"10.0.0.0/8","country_code":"QQ"}]`, []string{`"QQ" is not an ISO 3166-1`}},
		{"latitude alone", `[{"cidr":"10.0.0.0/8","site":"a","latitude":40.5}]`, []string{"both latitude and longitude"}},
		{"latitude range", `[{"cidr":"10.0.0.0/8","site":"a","latitude":140.5,"longitude":2}]`, []string{"latitude within ±90"}},
		{"longitude range", `[{"cidr":"10.0.0.0/8","site":"a","latitude":40.5,"longitude":-200}]`, []string{"longitude within ±180"}},
		{"control character", `[{"cidr":"10.0.0.0/8","site":"a\u001b[31mb"}]`, []string{`"site": has a control character`}},
		{"too long", `[{"cidr":"10.0.0.0/8","city":"` + strings.Repeat("x", 201) + `"}]`, []string{`"city": 201 bytes long: at most 200`}},
		{"syntax", "[\n{\"cidr\":\"10.0.0.0/8\",\"site\":\"a\"},\n{\"cidr\":\"10.1.0.0/16\" \"site\":\"b\"}\n]", []string{"entry 2 (line 3)", "invalid character"}},
		{"truncated", "[\n{\"cidr\":\"10.0.0.0/8\",\"site\":\"a\"},\n{\"cidr\":\"10.1.0.0/16\"", []string{"entry 2", "a ] or } missing"}},
		{"unclosed", "[{\"cidr\":\"10.0.0.0/8\",\"site\":\"a\"}", []string{"a ] or } missing"}},
		{"trailing", "[{\"cidr\":\"10.0.0.0/8\",\"site\":\"a\"}]\n[]", []string{"line 2: text after the array's closing ]"}},
	} {
		path := writeFile(t, "sites.json", tc.file)
		l, err := Open("", path)
		if err == nil {
			l.Close()
			t.Errorf("%s: Open succeeded", tc.name)
			continue
		}
		msg := err.Error()
		for _, w := range append(tc.want, path) {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: error %q lacks %q", tc.name, msg, w)
			}
		}
		if oe, ok := errors.AsType[*OpenError](err); !ok || oe.Source != fleet.LocationFromSites || oe.Path != path {
			t.Errorf("%s: error %#v is no OpenError of the sites file", tc.name, err)
		}
	}
}

func TestSitesFileUnreadable(t *testing.T) {
	_, err := Open("", filepath.Join(t.TempDir(), "nope.json"))
	if err == nil || !strings.Contains(err.Error(), "nope.json") || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("Open of a missing sites file: %v", err)
	}
	// An empty array is a valid (if idle) map.
	l, err := Open("", writeFile(t, "sites.json", "[]"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Empty() || l.Locate("10.0.0.1") != nil || l.Sources()[0].Entries != 0 {
		t.Errorf("empty sites file: %+v", l.Sources())
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}
