package controlsvc

import (
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

const testNonce = "a1b2c3d4e5f6-nonce"

type refusal struct{ kind, who, ip, reason string }

type calloutFixture struct {
	c        *callout
	reg      *Registry
	mu       sync.Mutex
	refused  []refusal
	granted  []string
	issuer   nkeys.KeyPair
	adminKP  nkeys.KeyPair
	viewerKP nkeys.KeyPair
	webKP    nkeys.KeyPair
}

// calloutTime is the callout fixture's clock: years ahead of when this was
// written, so a decision that read the wall clock instead would show.
var calloutTime = time.Date(2041, 3, 4, 5, 6, 7, 0, time.UTC)

func newCalloutFixture(t *testing.T) *calloutFixture {
	t.Helper()
	reg, err := OpenRegistry(filepath.Join(t.TempDir(), RegistryFile))
	if err != nil {
		t.Fatal(err)
	}
	issuer, _ := nkeys.CreateAccount()
	f := &calloutFixture{reg: reg, issuer: issuer}
	var adminPub, viewerPub, webPub string
	f.adminKP, adminPub = newUser(t)
	f.viewerKP, viewerPub = newUser(t)
	f.webKP, webPub = newUser(t)
	if _, err := reg.AddOperator("alice", adminPub, fleet.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.AddOperator("victor", viewerPub, fleet.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.AddMachine("10.0.0.5_web01", webPub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	f.c = &callout{
		keys:     &Keys{Issuer: issuer},
		reg:      reg,
		log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		ttl:      time.Hour,
		now:      func() time.Time { return calloutTime },
		readOnly: DefaultReadOnlyFunctions,
		onRefuse: func(kind, who, ip, reason string) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.refused = append(f.refused, refusal{kind, who, ip, reason})
		},
		onGrant: func(kind, who string) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.granted = append(f.granted, kind+" "+who)
		},
	}
	return f
}

// request builds the authorization request the broker would send for a
// client holding kp that connects with name and signs the nonce.
func request(t *testing.T, kp nkeys.KeyPair, name string) *jwt.AuthorizationRequestClaims {
	t.Helper()
	pub, _ := kp.PublicKey()
	sig, err := kp.Sign([]byte(testNonce))
	if err != nil {
		t.Fatal(err)
	}
	return rawRequest(t, pub, name, testNonce, base64.RawURLEncoding.EncodeToString(sig))
}

func rawRequest(t *testing.T, nkey, name, nonce, sig string) *jwt.AuthorizationRequestClaims {
	t.Helper()
	_, userNkey := newUser(t)
	req := jwt.NewAuthorizationRequestClaims(userNkey)
	req.UserNkey = userNkey
	req.Server = jwt.ServerID{Name: "test", ID: "NTESTSERVER"}
	req.ConnectOptions = jwt.ConnectOptions{Nkey: nkey, SignedNonce: sig, Name: name}
	req.ClientInformation = jwt.ClientInformation{Nonce: nonce, Host: "192.0.2.7", ID: 42}
	return req
}

func checkUserClaims(t *testing.T, f *calloutFixture, req *jwt.AuthorizationRequestClaims, uc *jwt.UserClaims, wantName string) {
	t.Helper()
	if uc.Name != wantName {
		t.Errorf("name: got %q, want %q", uc.Name, wantName)
	}
	if uc.Audience != broker.FleetAccount {
		t.Errorf("audience: got %q, want %q", uc.Audience, broker.FleetAccount)
	}
	if uc.Subject != req.UserNkey {
		t.Errorf("subject: got %q, want the request's user nkey %q", uc.Subject, req.UserNkey)
	}
	if want := f.c.now().Add(time.Hour).Unix(); uc.Expires != want {
		t.Errorf("expires at %v, want the callout clock plus the 1h ttl, %v", time.Unix(uc.Expires, 0).UTC(), time.Unix(want, 0).UTC())
	}
	// The claims encode, sign and validate as a user JWT. The expiry is
	// the callout clock's (checked above): the library's time checks read
	// the wall clock, so they are left out.
	tok, err := uc.Encode(f.issuer)
	if err != nil {
		t.Fatalf("encode user claims: %v", err)
	}
	back, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		t.Fatalf("decode user claims: %v", err)
	}
	var vr jwt.ValidationResults
	back.Validate(&vr)
	if vr.IsBlocking(false) {
		t.Fatalf("user claims do not validate: %v", vr.Issues)
	}
}

func TestDecideAdminOperator(t *testing.T) {
	f := newCalloutFixture(t)
	req := request(t, f.adminKP, "anything goes")
	uc, err := f.c.decide(req)
	if err != nil {
		t.Fatal(err)
	}
	checkUserClaims(t, f, req, uc, "operator:alice")
	key, _ := f.adminKP.PublicKey()
	p := uc.Permissions
	for _, s := range append(fleet.CallerCallsWildcards(key), fleet.CtlWildcard(key), fleet.PresenceSnapshotSubject, fleet.DiscoveryWildcard,
		fleet.CallerSessionCallsWildcard(key)) {
		if !p.Pub.Allow.Contains(s) {
			t.Errorf("admin may not publish %q (allow %v)", s, p.Pub.Allow)
		}
	}
	// An admin may always list, watch and call sessions.
	wantSub := []string{fleet.OperatorInboxWildcard(key), fleet.PresenceEventsWildcard, fleet.SessionEventsWildcard}
	if got := []string(p.Sub.Allow); !sameSet(got, wantSub) {
		t.Errorf("sub allow: got %q, want %q", got, wantSub)
	}
	noWildcardRoots(t, p)
	if got := f.granted; len(got) != 1 || got[0] != "operator alice" {
		t.Errorf("granted: got %q", got)
	}
}

func TestDecideViewerOperator(t *testing.T) {
	f := newCalloutFixture(t)
	req := request(t, f.viewerKP, "cc-bench")
	uc, err := f.c.decide(req)
	if err != nil {
		t.Fatal(err)
	}
	checkUserClaims(t, f, req, uc, "operator:victor")
	key, _ := f.viewerKP.PublicKey()
	p := uc.Permissions
	var want []string
	for _, fn := range DefaultReadOnlyFunctions {
		want = append(want, fleet.CallerFnWildcards(fn, key)...)
	}
	// No $SRV: every agent answers discovery, so a viewer's ping was
	// multiplied by the fleet's size (issue #11 finding 5).
	want = append(want, fleet.CtlWildcard(key), fleet.PresenceSnapshotSubject)
	if got := []string(p.Pub.Allow); !sameSet(got, want) {
		t.Errorf("viewer pub allow:\n got %q\nwant %q", got, want)
	}
	for _, s := range []string{fleet.DirectCallsWildcard, fleet.BroadcastsWildcard} {
		if p.Pub.Allow.Contains(s) {
			t.Errorf("viewer may publish %q", s)
		}
	}
	noWildcardRoots(t, p)
}

func TestDecideViewerCustomReadOnly(t *testing.T) {
	f := newCalloutFixture(t)
	f.c.readOnly = []string{"uptime"}
	uc, err := f.c.decide(request(t, f.viewerKP, "x"))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := f.viewerKP.PublicKey()
	if !uc.Permissions.Pub.Allow.Contains(fleet.CallerFnWildcards("uptime", key)[0]) || uc.Permissions.Pub.Allow.Contains(fleet.CallerFnWildcards("machine-info", key)[0]) {
		t.Fatalf("viewer pub allow: got %q, want only uptime calls", uc.Permissions.Pub.Allow)
	}
}

func TestDecideRegisteredMachine(t *testing.T) {
	f := newCalloutFixture(t)
	req := request(t, f.webKP, "10.0.0.5_web01")
	uc, err := f.c.decide(req)
	if err != nil {
		t.Fatal(err)
	}
	checkUserClaims(t, f, req, uc, "agent:10.0.0.5_web01")
	p := uc.Permissions
	want := append([]string{"sys.commandControl.fn.10~0~0~5_web01.*.*", "sys.commandControl.all.*.*", "sys.commandControl.agent.hint"}, fleet.AgentDiscoverySubjects("10.0.0.5_web01")...)
	if got := []string(p.Sub.Allow); !sameSet(got, want) {
		t.Errorf("agent sub allow:\n got %q\nwant %q", got, want)
	}
	for _, s := range p.Sub.Allow {
		if strings.HasPrefix(s, fleet.FnRoot) && s != "sys.commandControl.fn.10~0~0~5_web01.*.*" {
			t.Errorf("agent may subscribe to another machine's calls: %q", s)
		}
	}
	// Replies only under a subject naming this machine, and discovery
	// answers; no response permission that a requester could aim.
	wantPub := []string{"_INBOX_cc.*.10~0~0~5_web01.>", "_INBOX_cc.*.@srv.>"}
	if got := []string(p.Pub.Allow); !sameSet(got, wantPub) {
		t.Errorf("agent pub allow: got %q, want %q", got, wantPub)
	}
	if p.Resp != nil {
		t.Errorf("agent resp permission: got %+v, want none", p.Resp)
	}
	for _, want := range []string{"$SRV.PING", "$SRV.INFO.cc-agent", "$SRV.STATS.cc-agent.10~0~0~5_web01"} {
		if !p.Sub.Allow.Contains(want) {
			t.Errorf("agent cannot answer micro discovery %q", want)
		}
	}
	for _, s := range p.Sub.Allow {
		if strings.HasPrefix(s, fleet.SrvRoot+".") && strings.Count(s, ".") == 3 && !strings.HasSuffix(s, ".10~0~0~5_web01") {
			t.Errorf("agent may hear discovery asked of another instance: %q", s)
		}
	}
	if len(f.refused) != 0 {
		t.Errorf("refusals recorded: %+v", f.refused)
	}
}

func TestDecideRefusals(t *testing.T) {
	otherKP, otherPub := newUser(t)
	acctKP, _ := nkeys.CreateAccount()
	acctPub, _ := acctKP.PublicKey()
	acctSig, _ := acctKP.Sign([]byte(testNonce))
	tests := []struct {
		name        string
		req         func(t *testing.T, f *calloutFixture) *jwt.AuthorizationRequestClaims
		want        []string
		wantPending string // reason recorded for a pending machine, or ""
	}{
		{
			name: "unknown machine",
			req: func(t *testing.T, f *calloutFixture) *jwt.AuthorizationRequestClaims {
				return request(t, otherKP, "10.0.0.9_new")
			},
			want:        []string{"not in the registry", "cc-bench machines accept 10.0.0.9_new"},
			wantPending: "not in the registry",
		},
		{
			name: "wrong key for a registered machine",
			req: func(t *testing.T, f *calloutFixture) *jwt.AuthorizationRequestClaims {
				return request(t, otherKP, "10.0.0.5_web01")
			},
			want:        []string{"key on record", otherPub, "cc-bench machines accept 10.0.0.5_web01"},
			wantPending: "key does not match the key on record",
		},
		{
			name: "signature by another key",
			req: func(t *testing.T, f *calloutFixture) *jwt.AuthorizationRequestClaims {
				pub, _ := f.webKP.PublicKey()
				sig, _ := otherKP.Sign([]byte(testNonce))
				return rawRequest(t, pub, "10.0.0.5_web01", testNonce, base64.RawURLEncoding.EncodeToString(sig))
			},
			want: []string{"does not verify"},
		},
		{
			name: "signature over another nonce",
			req: func(t *testing.T, f *calloutFixture) *jwt.AuthorizationRequestClaims {
				pub, _ := f.adminKP.PublicKey()
				sig, _ := f.adminKP.Sign([]byte("an old nonce"))
				return rawRequest(t, pub, "x", testNonce, base64.RawURLEncoding.EncodeToString(sig))
			},
			want: []string{"does not verify"},
		},
		{
			name: "signature not base64",
			req: func(t *testing.T, f *calloutFixture) *jwt.AuthorizationRequestClaims {
				pub, _ := f.webKP.PublicKey()
				return rawRequest(t, pub, "10.0.0.5_web01", testNonce, "!!not base64!!")
			},
			want: []string{"not base64"},
		},
		{
			name: "missing nonce",
			req: func(t *testing.T, f *calloutFixture) *jwt.AuthorizationRequestClaims {
				r := request(t, f.webKP, "10.0.0.5_web01")
				r.ClientInformation.Nonce = ""
				return r
			},
			want: []string{"no signed nonce"},
		},
		{
			name: "missing signature",
			req: func(t *testing.T, f *calloutFixture) *jwt.AuthorizationRequestClaims {
				r := request(t, f.webKP, "10.0.0.5_web01")
				r.ConnectOptions.SignedNonce = ""
				return r
			},
			want: []string{"no signed nonce"},
		},
		{
			name: "no nkey",
			req: func(t *testing.T, f *calloutFixture) *jwt.AuthorizationRequestClaims {
				r := request(t, f.webKP, "10.0.0.5_web01")
				r.ConnectOptions.Nkey = ""
				return r
			},
			want: []string{"no nkey presented"},
		},
		{
			name: "account key instead of a user key",
			req: func(t *testing.T, f *calloutFixture) *jwt.AuthorizationRequestClaims {
				return rawRequest(t, acctPub, "10.0.0.5_web01", testNonce, base64.RawURLEncoding.EncodeToString(acctSig))
			},
			want: []string{"is not a user nkey"},
		},
		{
			name: "garbage key",
			req: func(t *testing.T, f *calloutFixture) *jwt.AuthorizationRequestClaims {
				return rawRequest(t, "Ugarbage", "10.0.0.5_web01", testNonce, "AAAA")
			},
			want: []string{"is not a user nkey"},
		},
		{
			name: "name is not a machine id",
			req: func(t *testing.T, f *calloutFixture) *jwt.AuthorizationRequestClaims {
				return request(t, otherKP, "web 01")
			},
			want: []string{"connection name must be the machine id"},
		},
		{
			name: "no name",
			req:  func(t *testing.T, f *calloutFixture) *jwt.AuthorizationRequestClaims { return request(t, otherKP, "") },
			want: []string{"connection name must be the machine id", "empty"},
		},
		{
			name: "wildcard name",
			req:  func(t *testing.T, f *calloutFixture) *jwt.AuthorizationRequestClaims { return request(t, otherKP, ">") },
			want: []string{"connection name must be the machine id"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCalloutFixture(t)
			uc, err := f.c.decide(tt.req(t, f))
			if err == nil {
				t.Fatalf("granted %q, want a refusal", uc.Name)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if len(f.refused) != 1 || f.refused[0].reason != err.Error() || f.refused[0].ip != "192.0.2.7" {
				t.Errorf("onRefuse: got %+v, want one call with the reason and ip", f.refused)
			}
			if len(f.granted) != 0 {
				t.Errorf("onGrant called: %q", f.granted)
			}
			pend := f.reg.Pending()
			if tt.wantPending == "" {
				if len(pend) != 0 {
					t.Fatalf("pending recorded for an unproven identity: %+v", pend)
				}
				return
			}
			if len(pend) != 1 {
				t.Fatalf("pending: got %+v, want one entry", pend)
			}
			if pend[0].Reason != tt.wantPending || pend[0].Key != otherPub || pend[0].IP != "192.0.2.7" {
				t.Errorf("pending: got %+v, want reason %q, key %s, ip 192.0.2.7", pend[0], tt.wantPending, otherPub)
			}
			// The registered machine keeps its key.
			if m, ok := f.reg.Machine("10.0.0.5_web01"); ok {
				if wk, _ := f.webKP.PublicKey(); m.Key != wk {
					t.Error("a refused connection changed the key on record")
				}
			}
		})
	}
}

// TestDecideRemovedOperator: a key that is no longer an operator's is
// treated as a machine, so an operator connection named e.g. "cc-bench"
// becomes a pending "machine". It is at least refused.
func TestDecideRemovedOperator(t *testing.T) {
	f := newCalloutFixture(t)
	_, other := newUser(t)
	if _, err := f.reg.AddOperator("carol", other, fleet.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.RemoveOperator("alice"); err != nil {
		t.Fatal(err)
	}
	if uc, err := f.c.decide(request(t, f.adminKP, "cc-bench")); err == nil {
		t.Fatalf("removed operator granted as %q", uc.Name)
	}
}

func TestVerifyNonceEncodings(t *testing.T) {
	kp, pub := newUser(t)
	sig, _ := kp.Sign([]byte(testNonce))
	tests := []struct {
		name string
		sig  string
		ok   bool
	}{
		{"raw url", base64.RawURLEncoding.EncodeToString(sig), true},
		{"std", base64.StdEncoding.EncodeToString(sig), true},
		{"truncated", base64.RawURLEncoding.EncodeToString(sig[:32]), false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifyNonce(pub, testNonce, tt.sig)
			if (err == nil) != tt.ok {
				t.Fatalf("verifyNonce: got %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if err := verifyNonce(pub, "", base64.StdEncoding.EncodeToString(sig)); err == nil {
		t.Fatal("verified without a nonce")
	}
}

func sameSet(got, want []string) bool {
	a := slices.Clone(got)
	b := slices.Clone(want)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// noWildcardRoots: nobody but the control service may touch $SYS, and no
// identity gets a bare ">" allow.
func noWildcardRoots(t *testing.T, p jwt.Permissions) {
	t.Helper()
	for _, list := range []jwt.StringList{p.Pub.Allow, p.Sub.Allow} {
		for _, s := range list {
			if s == ">" || s == "*" || strings.HasPrefix(s, "$SYS") || strings.HasPrefix(s, "_INBOX.") {
				t.Errorf("permission %q is too broad", s)
			}
		}
	}
}

func TestExpiredRequestSkipped(t *testing.T) {
	f := newCalloutFixture(t)
	server, _ := nkeys.CreateServer()
	req := request(t, f.webKP, "10.0.0.5_web01")
	req.Expires = calloutTime.Add(-time.Second).Unix()
	tok, err := req.Encode(server)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.authorize([]byte(tok), ""); !errors.Is(err, errStaleRequest) {
		t.Fatalf("expired request: got %v, want errStaleRequest", err)
	}
	req.Expires = calloutTime.Add(time.Minute).Unix()
	tok, _ = req.Encode(server)
	if _, err := f.c.authorize([]byte(tok), ""); err != nil {
		t.Fatalf("live request: %v", err)
	}
}

// TestDecodeRequestRefusesWhatIsNotARequest: the request is parsed
// without its (unpinned) server signature, so its shape is checked.
func TestDecodeRequestRefusesWhatIsNotARequest(t *testing.T) {
	f := newCalloutFixture(t)
	server, _ := nkeys.CreateServer()
	user, _ := nkeys.CreateUser()
	upub, _ := user.PublicKey()
	uc := jwt.NewUserClaims(upub)
	userJWT, err := uc.Encode(f.c.keys.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	noUser := request(t, f.webKP, "10.0.0.5_web01")
	noUser.UserNkey = "not-a-key"
	noUserJWT, _ := noUser.Encode(server)
	for name, tok := range map[string]string{
		"garbage":          "x",
		"bad base64":       "a.!!!.b",
		"bad JSON":         "a." + base64.RawURLEncoding.EncodeToString([]byte("{")) + ".b",
		"a user JWT":       userJWT,
		"no user nkey":     noUserJWT,
		"JSON not a claim": "a." + base64.RawURLEncoding.EncodeToString([]byte(`{"nats":{}}`)) + ".b",
	} {
		if _, err := decodeRequest([]byte(tok)); err == nil {
			t.Errorf("%s: decoded", name)
		}
		if _, err := f.c.authorize([]byte(tok), ""); err == nil || errors.Is(err, errStaleRequest) {
			t.Errorf("%s: authorize answered (%v)", name, err)
		}
	}
}

// TestLIFO: newest first; a full stack drops its oldest; close ends pops.
func TestLIFO(t *testing.T) {
	q := newLIFO(8)
	for i := range 10 {
		q.push(&nats.Msg{Subject: strconv.Itoa(i)}, calloutTime)
	}
	var got []string
	for range 8 {
		it, ok := q.pop()
		if !ok {
			break
		}
		got = append(got, it.m.Subject)
		if len(q.items) == 0 {
			break
		}
	}
	// 0..7 filled it; 8 dropped 0 and 1; 9 fit.
	if want := []string{"9", "8", "7", "6", "5", "4", "3", "2"}; !slices.Equal(got, want) {
		t.Fatalf("popped %v, want %v", got, want)
	}
	// A pop waiting on the empty stack, or one that starts after close,
	// returns nothing either way: no need to know which came first.
	done := make(chan bool)
	go func() { _, ok := q.pop(); done <- ok }()
	q.close()
	if ok := <-done; ok {
		t.Fatal("pop after close returned a message")
	}
	q.push(&nats.Msg{}, calloutTime) // ignored once closed
}

// TestDecideMachineWithFacts: an agent's name carries its facts after its
// id (fleet.EncodeFactsName); the callout admits it by the id alone, and
// a name whose id is another machine's is that machine's claim, checked
// against that machine's key.
func TestDecideMachineWithFacts(t *testing.T) {
	f := newCalloutFixture(t)
	name := fleet.EncodeFactsName("10.0.0.5_web01", &fleet.Facts{OS: "linux", Platform: "debian"})
	req := request(t, f.webKP, name)
	uc, err := f.c.decide(req)
	if err != nil {
		t.Fatal(err)
	}
	checkUserClaims(t, f, req, uc, "agent:10.0.0.5_web01")
	otherKP, _ := newUser(t)
	if _, err := f.c.decide(request(t, otherKP, name)); err == nil || !strings.Contains(err.Error(), "key on record") {
		t.Fatalf("another key naming web01 with facts: %v, want refused for its key", err)
	}
}
