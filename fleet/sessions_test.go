package fleet

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
)

type sessionVectors struct {
	IDs []struct {
		Name, App, Key, ID string
	} `json:"ids"`
	BadIDs []string `json:"bad_ids"`
	Build  []struct {
		Name, Func string
		Args       []string
		Want       string
	} `json:"build"`
	Constants map[string]string `json:"constants"`
	Tokens    struct {
		AppSeed   string             `json:"app_seed"`
		AppKey    string             `json:"app_key"`
		Claims    SessionTokenClaims `json:"claims"`
		Token     string             `json:"token"`
		ValidAt   int64              `json:"valid_at"`
		ExpiredAt int64              `json:"expired_at"`
		EarlyAt   int64              `json:"early_at"`
	} `json:"tokens"`
}

var sessionBuilders = map[string]func(a []string) string{
	"SessionFnSubject":           func(a []string) string { return SessionFnSubject(a[0], a[1], a[2]) },
	"SessionFnWildcard":          func(a []string) string { return SessionFnWildcard(a[0], a[1]) },
	"MachineReplies":             func(a []string) string { return MachineReplies(a[0]) },
	"CallReply":                  func(a []string) string { return CallReply(a[0], a[1], a[2], int(a[3][0]-'0')) },
	"CallerSessionCallsWildcard": func(a []string) string { return CallerSessionCallsWildcard(a[0]) },
	"SessionEventSubject":        func(a []string) string { return SessionEventSubject(a[0], a[1]) },
	"CtlSubject":                 func(a []string) string { return CtlSubject(a[0], a[1]) },
}

// TestWireSessions: session ids, subjects and tokens are what the shared
// vectors say (the JavaScript session library reads the same file).
func TestWireSessions(t *testing.T) {
	var all subjectVectors
	readVectors(t, "subjects.json", &all)
	v := all.Sessions
	for _, tt := range v.IDs {
		if got := SessionID(tt.App, tt.Key); got != tt.ID {
			t.Errorf("%s: SessionID = %q, want %q", tt.Name, got, tt.ID)
		}
		if err := ValidateSessionID(tt.ID); err != nil {
			t.Errorf("%s: %v", tt.Name, err)
		}
		if _, err := MachineFromToken(tt.ID); err == nil {
			t.Errorf("%s: session id %q is also a machine token", tt.Name, tt.ID)
		}
	}
	for _, id := range v.BadIDs {
		if ValidateSessionID(id) == nil {
			t.Errorf("ValidateSessionID(%q) accepted it", id)
		}
	}
	for _, tt := range v.Build {
		b := sessionBuilders[tt.Func]
		if b == nil {
			t.Errorf("%s: no builder %q", tt.Name, tt.Func)
			continue
		}
		if got := b(tt.Args); got != tt.Want {
			t.Errorf("%s: %s(%q) = %q, want %q", tt.Name, tt.Func, tt.Args, got, tt.Want)
		}
	}
	consts := map[string]string{"SessionFnRoot": SessionFnRoot, "OpSessionsSnapshot": OpSessionsSnapshot,
		"SessionEventsWildcard": SessionEventsWildcard, "SessionCallsWildcard": SessionCallsWildcard}
	for k, want := range v.Constants {
		if consts[k] != want {
			t.Errorf("%s = %q, want %q", k, consts[k], want)
		}
	}
	tk := v.Tokens
	c, err := ParseSessionToken(tk.Token, tk.AppKey, time.Unix(tk.ValidAt, 0))
	if err != nil || c.Subject != tk.Claims.Subject || c.Key != tk.Claims.Key || c.Claims["plan"] != "pro" {
		t.Errorf("ParseSessionToken = %+v, %v", c, err)
	}
	if got, err := SignSessionToken(tk.Claims, []byte(tk.AppSeed)); err != nil || got != tk.Token {
		t.Errorf("SignSessionToken = %q, %v; want %q", got, err, tk.Token)
	}
	if _, err := ParseSessionToken(tk.Token, tk.AppKey, time.Unix(tk.ExpiredAt, 0)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("at exp: %v, want expired", err)
	}
	if _, err := ParseSessionToken(tk.Token, tk.AppKey, time.Unix(tk.EarlyAt, 0)); err == nil || !strings.Contains(err.Error(), "future") {
		t.Errorf("before iat: %v, want issued in the future", err)
	}
}

// TestSessionTokenRefusals: a token by another key, tampered claims, a
// lifetime over the bound and malformed tokens are refused with a reason.
func TestSessionTokenRefusals(t *testing.T) {
	app, _ := nkeys.CreateAccount()
	other, _ := nkeys.CreateAccount()
	pub, _ := app.PublicKey()
	now := time.Unix(2000000000, 0)
	ok := SessionTokenClaims{App: "shop", Subject: "u1", IssuedAt: now.Unix(), Expires: now.Add(10 * time.Minute).Unix()}
	sign := func(kp nkeys.KeyPair, c SessionTokenClaims) string {
		s, err := EncodeSessionToken(c, kp.Sign)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := sign(app, ok)
	if _, err := ParseSessionToken(good, pub, now); err != nil {
		t.Fatal(err)
	}
	long := ok
	long.Expires = now.Add(25 * time.Hour).Unix()
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + b64.EncodeToString([]byte(`{"app":"shop","sub":"admin","iat":2000000000,"exp":2000000600}`)) + "." + parts[2]
	noSub := ok
	noSub.Subject = ""
	// exp - iat of 1e10 s overflows a time.Duration (nanoseconds) into a
	// negative lifetime; it must still be refused.
	overflow := ok
	overflow.Expires = ok.IssuedAt + 1e10
	huge := ok
	huge.IssuedAt, huge.Expires = -9e18, 9e18
	for name, tc := range map[string]struct{ tok, want string }{
		"another key":  {sign(other, ok), "not signed by the app"},
		"tampered":     {tampered, "not signed by the app"},
		"too long":     {sign(app, long), "at most"},
		"overflowing":  {sign(app, overflow), "at most"},
		"huge range":   {sign(app, huge), "Unix times"},
		"no subject":   {sign(app, noSub), "subject"},
		"not a JWT":    {"abc", "not a JWT"},
		"bad header":   {"e30." + parts[1] + "." + parts[2], "header"},
		"huge":         {strings.Repeat("a", MaxSessionToken+1), "bytes"},
		"bad base64":   {parts[0] + "." + parts[1] + ".!!", "base64"},
		"empty claims": {parts[0] + ".." + parts[2], "not signed"},
	} {
		if _, err := ParseSessionToken(tc.tok, pub, now); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
}

func TestMatchSession(t *testing.T) {
	s := &Session{App: "shop", Location: &Location{City: "New Brunswick", Region: "New Jersey"}}
	if ok, err := MatchSession(s, map[string]string{"city": "new brunswick", "region": "New Jersey"}); !ok || err != nil {
		t.Errorf("match: %v %v", ok, err)
	}
	if ok, _ := MatchSession(s, map[string]string{"city": "Newark"}); ok {
		t.Error("Newark matched")
	}
	if _, err := MatchSession(s, map[string]string{"planet": "earth"}); err == nil {
		t.Error("unknown key accepted")
	}
	if ok, _ := MatchSession(&Session{App: "shop"}, map[string]string{"city": "x"}); ok {
		t.Error("a session without a location matched a city")
	}
}
