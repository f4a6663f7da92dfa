package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// TestParseSessionWhere: both spellings of the example, quotes
// holding commas and escaped quotes, and clear errors for the rest.
func TestParseSessionWhere(t *testing.T) {
	nb := map[string]string{"city": "New Brunswick", "region": "New Jersey"}
	for in, want := range map[string]map[string]string{
		`city="New Brunswick",region="New Jersey"`:       nb,
		`city=New Brunswick,region=New Jersey`:           nb,
		` city = New Brunswick , region = 'New Jersey' `: nb,
		`CITY="New Brunswick", Region=New Jersey`:        nb,
		`city="Washington, D.C.",country_code=US`:        {"city": "Washington, D.C.", "country_code": "US"},
		`user="say \"hi\"",app=shop`:                     {"user": `say "hi"`, "app": "shop"},
		`platform=`:                                      {"platform": ""},
		``:                                               nil,
		`   `:                                            nil,
	} {
		got, err := parseSessionWhere(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseSessionWhere(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, wantErr := range map[string]string{
		`planet=earth`:                  `unknown session attribute "planet": use one of app, admission, user, ip, platform, site, city, region, country, country_code`,
		`city`:                          `term "city": want key=value`,
		`=x`:                            "key before = is empty",
		`city="New Brunswick`:           "never closed",
		`city="New" Brunswick`:          "after the quoted value of city",
		`city=New "Brunswick"`:          "has a quote inside",
		`city=a,city=b`:                 "city is given twice",
		`city=a,`:                       "ends with a comma",
		`city=a,region`:                 `term "region": want key=value`,
		`city=a,,region=b`:              `term "": want key=value`,
		strings.Repeat("city=a,", 1000): "at most 4096",
	} {
		if _, err := parseSessionWhere(in); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("parseSessionWhere(%.40q): %v; want %q", in, err, wantErr)
		}
	}
	// What whereText prints parses back to the same selection.
	w := map[string]string{"city": "Washington, D.C.", "user": `a"b`, "platform": ""}
	if got, err := parseSessionWhere(whereText(w)); err != nil || !reflect.DeepEqual(got, w) {
		t.Errorf("round trip of %q: %q, %v", whereText(w), got, err)
	}
}

func TestSessionUsageErrors(t *testing.T) {
	vars := map[string]string{"CC_KEY": "/nonexistent/key.nk"}
	for _, tt := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"sessions", "shop"}, "sessions takes no arguments"},
		{[]string{"sessions", "--where", "town=x"}, `--where: unknown session attribute "town": use one of app, admission`},
		{[]string{"sessions", "--app", "a.b"}, "--app: app name"},
		{[]string{"sessions", "--app", "shop", "--where", "app=game"}, "disagree"},
		{[]string{"sessions", "--limit", "-1"}, "--limit -1"},
		{[]string{"call", "latencyCheck", "--sessions", "--where", "role=web"}, `unknown session attribute "role"`},
		{[]string{"call", "latencyCheck", "--sessions", "--machine", "10.0.0.1_a"}, "--machine names machines; --sessions calls sessions"},
		{[]string{"call", "latencyCheck", "--app", "shop"}, "--app selects sessions: add --sessions"},
		{[]string{"watch", "--app", "shop"}, "--app selects sessions: add --sessions"},
		{[]string{"watch", "--sessions", "--where", "city"}, `term "city": want key=value`},
		{[]string{"apps"}, "apps needs a subcommand"},
		{[]string{"apps", "explode"}, `unknown apps subcommand "explode"`},
		{[]string{"apps", "add", "shop"}, "--functions FN,… is required"},
		{[]string{"apps", "add", "shop", "--functions", "bad.fn"}, "--functions: function name"},
		{[]string{"apps", "add", "s.p", "--functions", "f"}, "app name"},
		{[]string{"apps", "add", "shop", "--functions", "f", "--max-sessions", "-3"}, "--max-sessions -3"},
		{[]string{"apps", "add", "shop", "--functions", "f", "--public", "--key-out", "x.nk"}, "a --public app has none"},
		{[]string{"apps", "add", "shop", "--functions", "f", "--key-out", "/etc/passwd"}, "exists already"},
		{[]string{"apps", "add", "shop", "--functions", "f", "--key", "UDVEU3DD4KOFECV66VIHWEZOYX4ZKR3WV27L464SIIPOU2IUI3JCYSJF"}, "--key is your own nkey seed FILE"},
		{[]string{"apps", "rm"}, "rm needs NAME"},
		{[]string{"apps", "token", "shop"}, "--key FILE is required"},
		{[]string{"apps", "token", "shop", "--key", "k"}, "--user ID is required"},
		{[]string{"apps", "token", "shop", "--key", "k", "--user", "u", "--ttl", "48h"}, "--ttl 48h0m0s: want more than 0 and at most 24h0m0s"},
		{[]string{"apps", "token", "shop", "--key", "k", "--user", "u", "--bind", "Unope"}, "--bind \"Unope\" is not a public user nkey"},
		{[]string{"apps", "token", "shop", "--key", "k", "--user", "u", "--claim", "novalue"}, `--claim "novalue": want key=value`},
		{[]string{"operators", "add", "bob", "--pubkey", "UAAA", "--sessions"}, "not a public user nkey"},
	} {
		_, stderr, code := cc(t, vars, tt.args...)
		if code != exitUsage || !strings.Contains(stderr, tt.wantErr) {
			t.Errorf("cc-bench %q: exit %d, stderr %q; want exit 2 and %q", tt.args, code, stderr, tt.wantErr)
		}
	}
}

// TestAppsToken signs a token offline with a real app key from a file of
// mode 0600 and checks it as the control service will; a key others can
// read, or an operator key, is refused.
func TestAppsToken(t *testing.T) {
	dir := t.TempDir()
	app, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := app.Seed()
	pub, _ := app.PublicKey()
	keyPath := filepath.Join(dir, "shop-app.nk")
	writeFile(t, keyPath, append(seed, '\n'))
	sess, _ := nkeys.CreateUser()
	sessPub, _ := sess.PublicKey()

	stdout, stderr, code := cc(t, nil, "apps", "token", "shop", "--key", keyPath, "--user", "alice", "--ttl", "10m",
		"--claim", "plan=pro", "--claim", "team=blue", "--bind", sessPub)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	c, err := fleet.ParseSessionToken(strings.TrimSpace(stdout), pub, now())
	if err != nil {
		t.Fatalf("the token does not verify: %v", err)
	}
	if c.App != "shop" || c.Subject != "alice" || c.Key != sessPub || c.Expires-c.IssuedAt != 600 ||
		!reflect.DeepEqual(c.Claims, map[string]string{"plan": "pro", "team": "blue"}) {
		t.Errorf("claims %+v", c)
	}
	if _, err := fleet.ParseSessionToken(strings.TrimSpace(stdout), pub, now().Add(11*time.Minute)); err == nil {
		t.Errorf("the token is still valid after its ttl")
	}

	stdout, _, code = cc(t, nil, "apps", "token", "shop", "--key", keyPath, "--user", "bob", "--json")
	var line struct {
		Token, App, User string
		Expires          time.Time
	}
	if code != exitOK || json.Unmarshal([]byte(stdout), &line) != nil || line.App != "shop" || line.User != "bob" || line.Token == "" {
		t.Errorf("--json: exit %d, %q", code, stdout)
	}

	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = cc(t, nil, "apps", "token", "shop", "--key", keyPath, "--user", "alice")
	if code != exitFailure || !strings.Contains(stderr, "chmod 600") {
		t.Errorf("readable key: exit %d, %q; want it refused", code, stderr)
	}
	opSeed, _ := operatorKey(t, 5)
	opPath := filepath.Join(dir, "op.nk")
	writeFile(t, opPath, opSeed)
	_, stderr, code = cc(t, nil, "apps", "token", "shop", "--key", opPath, "--user", "alice")
	if code != exitFailure || !strings.Contains(stderr, "does not hold an app signing key") {
		t.Errorf("operator key: exit %d, %q", code, stderr)
	}
}

func TestSessionHelp(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"sessions", "--help"}, "Usage: cc-bench sessions"},
		{[]string{"apps", "--help"}, "Usage: cc-bench apps"},
		{[]string{"help", "apps"}, "Usage: cc-bench apps"},
	} {
		args, want := tt.args, tt.want
		stdout, stderr, code := cc(t, nil, args...)
		if code != exitOK || stderr != "" || !strings.Contains(stdout, want) || !strings.Contains(stdout, "Examples:") {
			t.Errorf("%q: exit %d, stderr %q:\n%s", args, code, stderr, stdout)
		}
	}
	for _, args := range [][]string{{"call", "--help"}, {"watch", "--help"}} {
		stdout, _, _ := cc(t, nil, args...)
		if !strings.Contains(stdout, "--sessions") || !strings.Contains(stdout, "New Brunswick") {
			t.Errorf("%q does not explain --sessions:\n%s", args, stdout)
		}
	}
	stdout, _, _ := cc(t, nil, "operators", "--help")
	if !strings.Contains(stdout, "--sessions") {
		t.Errorf("operators --help does not explain --sessions")
	}
}

func TestLocationText(t *testing.T) {
	for _, tt := range []struct {
		l    *fleet.Location
		want string
	}{
		{nil, "-"},
		{&fleet.Location{}, "-"},
		{&fleet.Location{City: "New Brunswick", Region: "New Jersey", Country: "United States", CountryCode: "US"}, "New Brunswick, New Jersey, US"},
		{&fleet.Location{Country: "France"}, "France"},
		{&fleet.Location{Site: "hq"}, "site hq"},
		{&fleet.Location{Site: "hq", City: "Paris"}, "hq: Paris"},
	} {
		if got := locationText(tt.l); got != tt.want {
			t.Errorf("locationText(%+v) = %q, want %q", tt.l, got, tt.want)
		}
	}
}

func TestSessionEventCols(t *testing.T) {
	at := time.Date(2026, 12, 1, 9, 30, 0, 0, time.Local)
	s := fleet.Session{ID: "s+abcdefghijklmnop", App: "shop", IP: "203.0.113.9", User: "alice",
		Location: &fleet.Location{City: "New Brunswick", Region: "New Jersey", CountryCode: "US"}, Declared: fleet.SessionDeclared{Platform: "mobile"}}
	var out strings.Builder
	cols := &watchTable{widths: []int{0, len("present")}}
	_ = cols.flush(&out)
	_ = cols.add(&out, sessionEventCols(fleet.SessionEvent{Event: fleet.EventJoined, Session: s, Time: at})...)
	_ = cols.add(&out, sessionEventCols(fleet.SessionEvent{Event: fleet.EventLeft, Session: fleet.Session{ID: "s+abcdefghijklmnop", App: "demo"}, Time: at, Reason: "found by resync"})...)
	want := `2026-12-01 09:30:00  joined   s+abcdefghijklmnop  shop  203.0.113.9  New Brunswick, New Jersey, US  mobile  user=alice
2026-12-01 09:30:00  left     s+abcdefghijklmnop  demo  -            -                              -                   (found by resync)
`
	if got := out.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
