package controlsvc

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/termsafe"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// fakeGate is a session gate for tests: it records the sessions admitted
// and the closeApp calls. Alone it counts the sessions admitted per app
// (none ever leaves); with next (the service's real session presence)
// it passes everything on and answers with next's counts.
type fakeGate struct {
	mu       sync.Mutex
	sessions []fleet.Session
	closed   []string
	next     sessionGate
	// wait, when set, is called with the app of each admission's count
	// (it may hold the admission).
	wait func(app string)
}

func (g *fakeGate) setWait(f func(app string)) {
	g.mu.Lock()
	g.wait = f
	g.mu.Unlock()
}

func (g *fakeGate) admitted(s fleet.Session) {
	g.mu.Lock()
	g.sessions = append(g.sessions, s)
	g.mu.Unlock()
	if g.next != nil {
		g.next.admitted(s)
	}
}

func (g *fakeGate) onlineOf(app string) int {
	g.mu.Lock()
	wait := g.wait
	g.mu.Unlock()
	if wait != nil {
		wait(app)
	}
	if g.next != nil {
		return g.next.onlineOf(app)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, s := range g.sessions {
		if s.App == app {
			n++
		}
	}
	return n
}

func (g *fakeGate) onlineFrom(app, ip string) int {
	if g.next != nil {
		return g.next.onlineFrom(app, ip)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, s := range g.sessions {
		if s.App == app && limiterKey(s.IP) == limiterKey(ip) {
			n++
		}
	}
	return n
}

func (g *fakeGate) connectedOf(app string) int {
	if g.next != nil {
		return g.next.connectedOf(app)
	}
	return g.onlineOf(app)
}

func (g *fakeGate) closeApp(ctx context.Context, app string) int {
	n := g.onlineOf(app)
	if g.next != nil {
		n = g.next.closeApp(ctx, app)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = append(g.closed, app)
	g.sessions = slices.DeleteFunc(g.sessions, func(s fleet.Session) bool { return s.App == app })
	return n
}

func (g *fakeGate) all() []fleet.Session {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sessions)
}

// hello is the auth_token of a session of app with token.
func hello(t testing.TB, h fleet.SessionHello) string {
	t.Helper()
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sessionRequest is the broker's request for a session holding kp that
// sends auth_token token.
func sessionRequest(t *testing.T, kp nkeys.KeyPair, token string) *jwt.AuthorizationRequestClaims {
	t.Helper()
	req := request(t, kp, "")
	req.ConnectOptions.Token = token
	return req
}

// signToken signs claims with the app seed.
func signToken(t testing.TB, c fleet.SessionTokenClaims, seed string) string {
	t.Helper()
	tok, err := fleet.SignSessionToken(c, []byte(seed))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func sessionFixture(t *testing.T) (*calloutFixture, *fakeGate, fleet.AppCreated, fleet.AppCreated) {
	t.Helper()
	f := newCalloutFixture(t)
	g := &fakeGate{}
	f.c.sessions = sessionAdmission{gate: g, perIP: newIPLimiter(5, 20, 100, f.c.now), maxPerApp: 3}
	pub, err := f.reg.AddApp(fleet.AppRequest{Name: "speedtest", Functions: []string{"latencyCheck"}, Public: true, MaxSessions: 2}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	signed, err := f.reg.AddApp(fleet.AppRequest{Name: "bank", Functions: []string{"latencyCheck", "trace"}}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	return f, g, pub, signed
}

func TestDecideSessionPublic(t *testing.T) {
	f, g, _, _ := sessionFixture(t)
	kp, pub := newUser(t)
	req := sessionRequest(t, kp, hello(t, fleet.SessionHello{App: "speedtest", Platform: "browser\x1b[2J", UserAgent: strings.Repeat("Mozilla ", 100), AppVersion: "1.2\u202e"}))
	uc, err := f.c.decide(req)
	if err != nil {
		t.Fatal(err)
	}
	id := fleet.SessionID("speedtest", pub)
	checkUserClaims(t, f, req, uc, "session:"+id)
	if !slices.Contains(uc.Tags, "app:speedtest") {
		t.Errorf("tags %v, want app:speedtest", uc.Tags)
	}
	if got, want := []string(uc.Permissions.Sub.Allow), []string{fleet.SessionFnWildcard(id, "latencyCheck")}; !slices.Equal(got, want) {
		t.Errorf("sub allow %v, want %v", got, want)
	}
	if got, want := []string(uc.Permissions.Pub.Allow), []string{fleet.MachineReplies(id)}; !slices.Equal(got, want) {
		t.Errorf("pub allow %v, want %v", got, want)
	}
	if uc.Permissions.Resp != nil || len(uc.Permissions.Sub.Deny) > 0 || len(uc.Permissions.Pub.Deny) > 0 {
		t.Errorf("unexpected permissions %+v", uc.Permissions)
	}
	ss := g.all()
	if len(ss) != 1 {
		t.Fatalf("gate told of %d sessions, want 1", len(ss))
	}
	s := ss[0]
	if s.ID != id || s.App != "speedtest" || s.Admission != fleet.AdmissionPublic || s.IP != "192.0.2.7" || !s.Since.Equal(calloutTime) ||
		!slices.Equal(s.Functions, []string{"latencyCheck"}) || s.User != "" {
		t.Errorf("session %+v", s)
	}
	if s.Declared.Platform != "browser[2J" || len(s.Declared.UserAgent) > maxDeclaredUserAgent || s.Declared.AppVersion != "1.2" {
		t.Errorf("declared %+v: want control characters removed and lengths cut", s.Declared)
	}
}

func TestDecideSessionSigned(t *testing.T) {
	f, g, _, bank := sessionFixture(t)
	kp, pub := newUser(t)
	tok := signToken(t, fleet.SessionTokenClaims{App: "bank", Subject: "user-42", IssuedAt: calloutTime.Unix(), Expires: calloutTime.Add(time.Minute).Unix(),
		Key: pub, Claims: map[string]string{"tier": "gold"}}, bank.Seed)
	uc, err := f.c.decide(sessionRequest(t, kp, hello(t, fleet.SessionHello{App: "bank", Token: tok})))
	if err != nil {
		t.Fatal(err)
	}
	id := fleet.SessionID("bank", pub)
	if got := []string(uc.Permissions.Sub.Allow); !sameSet(got, []string{fleet.SessionFnWildcard(id, "latencyCheck"), fleet.SessionFnWildcard(id, "trace")}) {
		t.Errorf("sub allow %v", got)
	}
	s := g.all()[0]
	if s.User != "user-42" || s.Claims["tier"] != "gold" || s.Admission != fleet.AdmissionSigned {
		t.Errorf("session %+v", s)
	}
}

// TestDecideSessionRefusals: each way a session can be wrong is refused,
// named in the refusal (log, audit, metrics), and the gate never hears of it.
func TestDecideSessionRefusals(t *testing.T) {
	f, g, _, bank := sessionFixture(t)
	other, err := f.reg.AddApp(fleet.AppRequest{Name: "other", Functions: []string{"x"}}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	kp, pub := newUser(t)
	_, stranger := newUser(t)
	claims := func(mod func(*fleet.SessionTokenClaims)) fleet.SessionTokenClaims {
		c := fleet.SessionTokenClaims{App: "bank", Subject: "u", IssuedAt: calloutTime.Unix(), Expires: calloutTime.Add(time.Minute).Unix(), Key: pub}
		mod(&c)
		return c
	}
	none := func(*fleet.SessionTokenClaims) {}
	tests := []struct {
		name  string
		req   func() *jwt.AuthorizationRequestClaims
		site  string
		want  string
		token string
	}{
		{name: "not json", token: "hunter2", want: "not a session hello"},
		{name: "too large", token: `{"app":"` + strings.Repeat("a", fleet.MaxSessionHello) + `"}`, want: "at most 8192"},
		{name: "bad json", token: `{"app":`, want: "not valid JSON"},
		{name: "trailing", token: `{"app":"bank"} {}`, want: "text after"},
		{name: "bad app name", token: `{"app":"a.b"}`, want: "session hello app"},
		{name: "unknown app", token: `{"app":"nope"}`, want: "app nope is not registered"},
		{name: "at a site", token: `{"app":"speedtest"}`, site: "paris", want: "sessions connect to the hub"},
		{name: "public with token", token: hello(t, fleet.SessionHello{App: "speedtest", Token: "x"}), want: "is public"},
		{name: "signed without token", token: `{"app":"bank"}`, want: "admits only sessions with a token"},
		{name: "bad signature", token: hello(t, fleet.SessionHello{App: "bank", Token: signToken(t, claims(none), other.Seed)}), want: "not signed by the app's key"},
		{name: "expired", token: hello(t, fleet.SessionHello{App: "bank", Token: signToken(t, claims(func(c *fleet.SessionTokenClaims) {
			c.IssuedAt, c.Expires = calloutTime.Add(-time.Hour).Unix(), calloutTime.Add(-time.Second).Unix()
		}), bank.Seed)}), want: "expired"},
		{name: "bound to another key", token: hello(t, fleet.SessionHello{App: "bank", Token: signToken(t, claims(func(c *fleet.SessionTokenClaims) { c.Key = stranger }), bank.Seed)}), want: "bound to key"},
		{name: "token of another app", token: hello(t, fleet.SessionHello{App: "other", Token: signToken(t, claims(none), other.Seed)}), want: `for app "bank", not other`},
		{name: "forged nonce", req: func() *jwt.AuthorizationRequestClaims {
			r := sessionRequest(t, kp, `{"app":"speedtest"}`)
			r.ConnectOptions.SignedNonce = "AAAA"
			return r
		}, want: "does not verify"},
		{name: "no nkey", req: func() *jwt.AuthorizationRequestClaims {
			r := sessionRequest(t, kp, `{"app":"speedtest"}`)
			r.ConnectOptions.Nkey = ""
			return r
		}, want: "no nkey presented"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := sessionRequest(t, kp, tt.token)
			if tt.req != nil {
				req = tt.req()
			}
			f.mu.Lock()
			f.refused = nil
			f.mu.Unlock()
			_, err := f.c.decideAt(req, tt.site)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want a refusal containing %q", err, tt.want)
			}
			if len(err.Error()) > 1024 {
				t.Fatalf("refusal echoes %d bytes", len(err.Error()))
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.refused) != 1 || f.refused[0].kind != "session" || !strings.Contains(f.refused[0].reason, tt.want) {
				t.Fatalf("refusals recorded %+v", f.refused)
			}
		})
	}
	if n := len(g.all()); n != 0 {
		t.Fatalf("gate told of %d refused sessions", n)
	}
}

// TestDecideSessionCap: an app's ONLINE sessions are capped (its own
// max_sessions, else the service's), signed apps too.
func TestDecideSessionCap(t *testing.T) {
	f, g, _, bank := sessionFixture(t)
	for i := range 3 {
		kp, _ := newUser(t)
		_, err := f.c.decide(sessionRequest(t, kp, `{"app":"speedtest"}`))
		if i < 2 && err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		if i == 2 && (err == nil || !strings.Contains(err.Error(), "its cap (max_sessions 2)")) {
			t.Fatalf("third session: got %v, want the cap", err)
		}
	}
	for i := range 4 {
		kp, pub := newUser(t)
		tok := signToken(t, fleet.SessionTokenClaims{App: "bank", Subject: "u", IssuedAt: calloutTime.Unix(), Expires: calloutTime.Add(time.Minute).Unix(), Key: pub}, bank.Seed)
		_, err := f.c.decide(sessionRequest(t, kp, hello(t, fleet.SessionHello{App: "bank", Token: tok})))
		if i < 3 && err != nil {
			t.Fatalf("signed session %d: %v", i, err)
		}
		if i == 3 && (err == nil || !strings.Contains(err.Error(), "its cap (max_sessions 3)")) {
			t.Fatalf("fourth signed session: got %v, want the service's cap", err)
		}
	}
	if n := g.onlineOf("speedtest"); n != 2 {
		t.Fatalf("speedtest has %d sessions, want 2", n)
	}
}

// TestDecideSessionRatePerIP: past the burst an address's attempts are
// refused before any signature is checked; another address and agents
// and operators are not affected; the bucket refills with the clock.
func TestDecideSessionRatePerIP(t *testing.T) {
	f, _, _, _ := sessionFixture(t)
	now := calloutTime
	f.c.now = func() time.Time { return now }
	f.c.sessions.perIP = newIPLimiter(1, 3, 100, f.c.now)
	kp, _ := newUser(t)
	// Unknown apps: the attempts cost a token whether they succeed or not.
	for i := range 3 {
		if _, err := f.c.decide(sessionRequest(t, kp, `{"app":"nope"}`)); err == nil || !strings.Contains(err.Error(), "not registered") {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	if _, err := f.c.decide(sessionRequest(t, kp, `{"app":"speedtest"}`)); err == nil || !strings.Contains(err.Error(), "too many session or WebSocket connections from 192.0.2.7") {
		t.Fatalf("over the burst: got %v", err)
	}
	other := sessionRequest(t, kp, `{"app":"speedtest"}`)
	other.ClientInformation.Host = "198.51.100.1"
	if _, err := f.c.decide(other); err != nil {
		t.Fatalf("another address: %v", err)
	}
	if _, err := f.c.decide(request(t, f.adminKP, "op")); err != nil {
		t.Fatalf("operator from the flooding address: %v", err)
	}
	if _, err := f.c.decide(request(t, f.webKP, "10.0.0.5_web01")); err != nil {
		t.Fatalf("agent from the flooding address: %v", err)
	}
	now = now.Add(time.Second)
	if _, err := f.c.decide(sessionRequest(t, kp, `{"app":"speedtest"}`)); err != nil {
		t.Fatalf("a second later: %v", err)
	}
}

func TestIPLimiterBounded(t *testing.T) {
	now := calloutTime
	l := newIPLimiter(1, 2, 10, func() time.Time { return now })
	for i := range 100 {
		r := l.allow(fmt.Sprintf("10.0.0.%d", i))
		if i < 10 && r != nil {
			t.Fatalf("new address %d refused: %v", i, r)
		}
		if l.size() > 10 {
			t.Fatalf("limiter remembers %d addresses, more than its 10", l.size())
		}
	}
	// A refused address is remembered across a sweep while it is hot.
	l = newIPLimiter(0, 1, 4, func() time.Time { return now })
	l.allow("hot")
	if r := l.allow("hot"); r == nil || !r.log {
		t.Fatalf("second attempt: got %v, want a logged refusal", r)
	}
	if r := l.allow("hot"); r == nil || r.log {
		t.Fatalf("third attempt: got %+v, want an unlogged refusal", r)
	}
}

func TestParseSessionHello(t *testing.T) {
	h, err := parseSessionHello(`{"app":"speedtest","platform":"browser","user_agent":"UA","app_version":"1","extra":1}`)
	if err != nil || h.App != "speedtest" || h.Platform != "browser" {
		t.Fatalf("got %+v, %v", h, err)
	}
	huge := `{"app":"` + strings.Repeat("é", fleet.MaxSessionHello) + `"}`
	for _, bad := range []string{"", "x", huge, `[]`, `{"app":""}`, `{"app":"` + strings.Repeat("a", 200) + `"}`, `{"app":1}`, `{"app":"ok"}x`} {
		_, err := parseSessionHello(bad)
		if err == nil {
			t.Errorf("%.40q accepted", bad)
			continue
		}
		if len(err.Error()) > 400 {
			t.Errorf("%.40q: error of %d bytes echoes the client", bad, len(err.Error()))
		}
	}
}

func TestCleanDeclared(t *testing.T) {
	for _, tt := range []struct {
		in   string
		max  int
		want string
	}{
		{"browser", 32, "browser"},
		{"a\x00b\nc\td\u200fe\u202ef\xff", 32, "abcdef"},
		{"ééééé", 5, "éé"},
		{"  x  ", 32, "x"},
	} {
		if got := cleanDeclared(tt.in, tt.max); got != tt.want {
			t.Errorf("cleanDeclared(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

func TestOperatorPermissionsSessions(t *testing.T) {
	_, key := newUser(t)
	has := func(p jwt.Permissions) bool {
		return slices.Contains(p.Pub.Allow, fleet.CallerSessionCallsWildcard(key)) &&
			slices.Contains(p.Sub.Allow, fleet.SessionEventsWildcard)
	}
	for _, tt := range []struct {
		role     string
		sessions bool
		want     bool
	}{{fleet.RoleAdmin, false, true}, {fleet.RoleViewer, false, false}, {fleet.RoleViewer, true, true}} {
		p := operatorPermissions(operatorIdentity{Name: "o", Key: key, Role: tt.role, Sessions: tt.sessions}, DefaultReadOnlyFunctions)
		if has(p) != tt.want {
			t.Errorf("%s sessions=%v: session permissions %v, want %v (%+v)", tt.role, tt.sessions, has(p), tt.want, p)
		}
	}
}

func TestAppsRegistry(t *testing.T) {
	path := filepath.Join(t.TempDir(), RegistryFile)
	reg, err := OpenRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := []fleet.AppRequest{
		{Name: "", Functions: []string{"f"}},
		{Name: "a.b", Functions: []string{"f"}},
		{Name: "a"},
		{Name: "a", Functions: []string{"f.g"}},
		{Name: "a", Functions: []string{"f", "f"}},
		{Name: "a", Functions: []string{"f"}, MaxSessions: -1},
		{Name: "a", Functions: []string{"f"}, Origins: []string{"https://x.example/path"}},
		{Name: "a", Functions: []string{"f"}, Origins: []string{"ftp://x.example"}},
		{Name: "a", Functions: []string{"f"}, Origins: []string{"https://"}},
		{Name: "a", Functions: []string{"f"}, Origins: []string{"https://u@x.example"}},
		{Name: "a", Functions: []string{"f"}, Origins: []string{"https://x.example?q"}},
		{Name: "a", Functions: []string{"f"}, Origins: []string{"https://x.example:99999"}},
	}
	for _, q := range bad {
		if _, err := reg.AddApp(q, "alice"); err == nil || fleet.CodeOf(mapRegistryError(err)) != fleet.CodeBadRequest {
			t.Errorf("%+v: got %v, want a 400", q, err)
		}
	}
	pub, err := reg.AddApp(fleet.AppRequest{Name: "speedtest", Functions: []string{"latencyCheck"}, Public: true, Origins: []string{"https://speed.example", "http://localhost:8080"}}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if pub.Seed != "" || pub.App.Key != "" || pub.App.Admission != fleet.AdmissionPublic || pub.App.AddedBy != "alice" {
		t.Fatalf("public app %+v", pub)
	}
	signed, err := reg.AddApp(fleet.AppRequest{Name: "bank", Functions: []string{"latencyCheck"}, MaxSessions: 5}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed([]byte(signed.Seed))
	if err != nil {
		t.Fatalf("seed %q: %v", signed.Seed, err)
	}
	if k, _ := kp.PublicKey(); k != signed.App.Key || !nkeys.IsValidPublicAccountKey(k) || signed.App.Admission != fleet.AdmissionSigned {
		t.Fatalf("signed app %+v: key does not match the seed", signed.App)
	}
	if _, err := reg.AddApp(fleet.AppRequest{Name: "bank", Functions: []string{"x"}}, "alice"); fleet.CodeOf(mapRegistryError(err)) != fleet.CodeConflict {
		t.Fatalf("duplicate: got %v, want a 409", err)
	}
	if _, err := reg.AddApp(fleet.AppRequest{Name: "Bank", Functions: []string{"x"}, Public: true}, "alice"); fleet.CodeOf(mapRegistryError(err)) != fleet.CodeConflict {
		t.Fatalf("same name in another case: got %v, want a 409", err)
	}
	// Only the public key is stored, and the apps come back on restart.
	raw, err := os.ReadFile(path)
	b := string(raw)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b, signed.Seed) || !strings.Contains(b, signed.App.Key) {
		t.Fatal("the registry file holds the app's seed")
	}
	reg2, err := OpenRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := reg2.Apps(); len(got) != 2 || got[0].Name != "bank" || got[0].Key != signed.App.Key || got[0].MaxSessions != 5 || got[1].Origins[1] != "http://localhost:8080" {
		t.Fatalf("apps after reload: %+v", got)
	}
	if _, err := reg2.RemoveApp("bank"); err != nil {
		t.Fatal(err)
	}
	if _, err := reg2.RemoveApp("bank"); fleet.CodeOf(mapRegistryError(err)) != fleet.CodeNotFound {
		t.Fatalf("second removal: got %v, want a 404", err)
	}
	if _, ok := reg2.App("bank"); ok {
		t.Fatal("removed app still there")
	}
}

func TestRegistryRefusesDamagedApps(t *testing.T) {
	for _, apps := range []string{
		`{"x":{"name":"y","functions":["f"],"admission":"public"}}`,
		`{"x":{"name":"x","functions":[],"admission":"public"}}`,
		`{"x":{"name":"x","functions":["f"],"admission":"signed","key":"UABC"}}`,
		`{"x":{"name":"x","functions":["f"],"admission":"whatever"}}`,
		`{"x":null}`,
	} {
		path := filepath.Join(t.TempDir(), RegistryFile)
		if err := writeFileAtomic(path, []byte(`{"version":1,"machines":{},"operators":{},"apps":`+apps+`}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenRegistry(path); err == nil {
			t.Errorf("apps %s loaded", apps)
		}
	}
}

func TestAPIApps(t *testing.T) {
	s, admin, viewer := apiService(t)
	g := &fakeGate{}
	s.sessions = g
	ctx := context.Background()
	call := func(key, op string, body any) (any, error) {
		b, _ := json.Marshal(body)
		h := map[string]apiHandler{fleet.OpAppsAdd: s.apiAppsAdd, fleet.OpAppsList: s.apiAppsList, fleet.OpAppsRemove: s.apiAppsRemove}[op]
		return s.runAPI(ctx, op, fleet.CtlSubject(key, op), b, h)
	}
	for _, op := range []string{fleet.OpAppsAdd, fleet.OpAppsList, fleet.OpAppsRemove} {
		if _, err := call(viewer, op, fleet.AppRequest{Name: "x", Functions: []string{"f"}}); fleet.CodeOf(err) != fleet.CodeForbidden {
			t.Errorf("viewer %s: got %v, want a 403", op, err)
		}
	}
	res, err := call(admin, fleet.OpAppsAdd, fleet.AppRequest{Name: "speedtest", Functions: []string{"latencyCheck"}, Public: true})
	if err != nil {
		t.Fatal(err)
	}
	if c := res.(fleet.AppCreated); c.App.Name != "speedtest" || c.Seed != "" {
		t.Fatalf("created %+v", c)
	}
	if _, err := call(admin, fleet.OpAppsAdd, fleet.AppRequest{Name: "speedtest", Functions: []string{"latencyCheck"}}); fleet.CodeOf(err) != fleet.CodeConflict {
		t.Fatalf("duplicate: got %v, want a 409", err)
	}
	if _, err := call(admin, fleet.OpAppsAdd, fleet.AppRequest{Name: "x"}); fleet.CodeOf(err) != fleet.CodeBadRequest {
		t.Fatalf("no functions: got %v, want a 400", err)
	}
	g.admitted(fleet.Session{ID: "s+aaaaaaaaaaaaaaaa", App: "speedtest"})
	res, err = call(admin, fleet.OpAppsList, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l := res.([]fleet.App); len(l) != 1 || l[0].Online != 1 {
		t.Fatalf("list %+v", l)
	}
	res, err = call(admin, fleet.OpAppsRemove, fleet.AppRequest{Name: "speedtest"})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.(fleet.AppRemoved); r.Name != "speedtest" || r.Closed != 1 || !slices.Equal(g.closed, []string{"speedtest"}) {
		t.Fatalf("removed %+v, closed %v", r, g.closed)
	}
	if _, err := call(admin, fleet.OpAppsRemove, fleet.AppRequest{Name: "speedtest"}); fleet.CodeOf(err) != fleet.CodeNotFound {
		t.Fatalf("second removal: got %v, want a 404", err)
	}
	// Without session presence nothing is counted or closed.
	s.sessions = nil
	if _, err := call(admin, fleet.OpAppsList, nil); err != nil {
		t.Fatal(err)
	}
}

func TestAPIOperatorsAddSessions(t *testing.T) {
	s, _, _ := apiService(t)
	_, key := newUser(t)
	b, _ := json.Marshal(fleet.OperatorRequest{Name: "sam", Key: key, Role: fleet.RoleViewer, Sessions: true})
	if _, err := s.apiOperatorsAdd(context.Background(), operatorIdentity{}, b); err != nil {
		t.Fatal(err)
	}
	if o, ok := s.reg.Operator("sam"); !ok || !o.Sessions {
		t.Fatalf("operator %+v: want the sessions permission stored", o)
	}
}

// FuzzSessionHello: whatever a client sends as its auth_token, parsing
// never panics, a refusal quotes at most a bounded piece of it, and what
// is kept as declared is bounded and printable.
func FuzzSessionHello(f *testing.F) {
	for _, s := range []string{`{"app":"speedtest","platform":"browser"}`, `{"app":"a","user_agent":"\u202e\u0000x"}`, `{`, `"x"`, `{"app":"ok"}{}`, ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		h, err := parseSessionHello(token)
		if err != nil {
			if len(err.Error()) > 600 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if fleet.ValidateName("app", h.App) != nil {
			t.Fatalf("accepted app %q", h.App)
		}
		d := declared(h)
		for _, v := range []string{d.Platform, d.UserAgent, d.AppVersion} {
			if len(v) > maxDeclaredUserAgent || !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return !unicode.IsPrint(r) }) {
				t.Fatalf("declared %q", v)
			}
		}
	})
}

// TestSessionSignedUserCleaned: the user and claims of a signed token
// reach presence without control or format characters.
func TestSessionSignedUserCleaned(t *testing.T) {
	f, g, _, bank := sessionFixture(t)
	kp, pub := newUser(t)
	tok := signToken(t, fleet.SessionTokenClaims{App: "bank", Subject: "mallory\x1b[2J\u202e", IssuedAt: calloutTime.Unix(), Expires: calloutTime.Add(time.Minute).Unix(),
		Key: pub, Claims: map[string]string{"tier\x07": "gold\x1b]0;pwned\x07", "\u2066": "x"}}, bank.Seed)
	if _, err := f.c.decide(sessionRequest(t, kp, hello(t, fleet.SessionHello{App: "bank", Token: tok}))); err != nil {
		t.Fatal(err)
	}
	s := g.all()[0]
	if s.User != "mallory[2J" {
		t.Errorf("user %q", s.User)
	}
	if len(s.Claims) != 1 || s.Claims["tier"] != "gold]0;pwned" {
		t.Errorf("claims %q", s.Claims)
	}
	for k, v := range s.Claims {
		if !termsafe.Safe(k) || !termsafe.Safe(v) {
			t.Errorf("claim %q=%q unsafe to print", k, v)
		}
	}
}
