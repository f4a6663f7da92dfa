package geo

import (
	"strings"
	"testing"
)

// garbage is what Locate must answer nil to, without panicking. ("::"
// is an address, the unspecified one, but in no network of the test's.)
var garbage = []string{
	"", " ", "::", "999.1.1.1", "1.2.3", "1.2.3.4.5", "[::1", "::1]", "[]", "[:]",
	"::ffff:", "::ffff:999.1.1.1", "1.2.3.4:", ":4222", "1.2.3.4:99999", "[1.2.3.4]", "fe80::1%",
	"fe80::1%" + strings.Repeat("z", 90), "%", "/", "10.0.0.0/8", "nats://10.0.0.1:4222", "localhost",
	"\x00", "\xff\xfe", "１.２.３.４", strings.Repeat("1", 1<<16), strings.Repeat(":", 200),
	strings.Repeat("[", 50) + "::1" + strings.Repeat("]", 50), "2001:db8::" + strings.Repeat("0", 300),
}

// garbageLocator has every source: a sites file and both layouts.
func garbageLocator(t testing.TB) *Locator {
	l, err := Open(flatCity(t)+","+maxmindCity(t), writeFile(t, "sites.json", testSites))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLocateGarbage(t *testing.T) {
	l := garbageLocator(t)
	defer l.Close()
	for _, s := range garbage {
		if got := l.Locate(s); got != nil {
			t.Errorf("Locate(%.40q) = %+v, want nil", s, got)
		}
	}
	// Addresses a broker or a proxy may write, tolerated.
	for s, site := range map[string]string{"0.0.0.0": "elsewhere-v4", "[::1]": "loopback-v6", "[::1]:4222": "loopback-v6", "[::ffff:10.20.5.7]": "nb-lab-bench"} {
		if got := l.Locate(s); got == nil || got.Site != site {
			t.Errorf("Locate(%q) = %+v, want site %s", s, got, site)
		}
	}
}

// FuzzLocate: no text makes Locate panic, and what it answers is a
// location from one of its sources.
func FuzzLocate(f *testing.F) {
	for _, s := range append(garbage, "0.0.0.0", "[::1]", "10.20.5.7", "::ffff:81.2.69.1", "2001:db8:1::1", "128.6.1.1", "[::1]:80") {
		f.Add(s)
	}
	l := garbageLocator(f)
	f.Cleanup(l.Close)
	f.Fuzz(func(t *testing.T, s string) {
		if got := l.Locate(s); got != nil && got.Source != "sites" && got.Source != "geoip" {
			t.Errorf("Locate(%q) = %+v: no source", s, got)
		}
	})
}

// FuzzParseSites: no file makes the sites parser panic; what it accepts
// answers lookups.
func FuzzParseSites(f *testing.F) {
	f.Add([]byte(testSites))
	f.Add([]byte(`[{"cidr":"10.0.0.0/8","site":"a"},{"cidr":"10.0.0.0/8","site":"b"}]`))
	f.Add([]byte(`[{"cidr":"::ffff:10.0.0.0/104","country_code":"us","latitude":1,"longitude":2}]`))
	f.Add([]byte(`[{"cidr":"1.2.3.4"`))
	f.Add([]byte(`[[],{},null,1,"x"]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := parseSites(data)
		if err != nil {
			return
		}
		for _, ip := range []string{"10.0.0.1", "1.2.3.4", "::1", "2001:db8::1"} {
			a, _ := parseAddr(ip)
			if loc := s.lookup(a); loc != nil && loc.Source != "sites" {
				t.Errorf("lookup(%s) = %+v", ip, loc)
			}
		}
	})
}
