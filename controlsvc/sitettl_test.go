package controlsvc

import (
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
)

// TestSiteTTLHubAndSite: credentials for a connection at a remote site's
// broker (a request that came through the site's own CONTROL link, so the
// site is known from its subject) expire after the site TTL; at the hub
// after the user TTL. The clock is fixed.
func TestSiteTTLHubAndSite(t *testing.T) {
	f := newCalloutFixture(t)
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	f.c.now = func() time.Time { return at }
	f.c.siteTTL = 5 * time.Minute
	kp, pub := newUser(t)
	if _, err := f.reg.SetMachineAt("10.2.0.1_dc2-a", pub, "dc2", nil, "test", false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what string
		uc   func() (*jwt.UserClaims, error)
		want time.Time
	}{
		{"a machine at the hub", func() (*jwt.UserClaims, error) { return f.c.decideAt(request(t, f.webKP, "10.0.0.5_web01"), "") }, at.Add(time.Hour)},
		{"an operator at the hub", func() (*jwt.UserClaims, error) { return f.c.decideAt(request(t, f.adminKP, "cc-bench"), "") }, at.Add(time.Hour)},
		{"a machine at site dc2", func() (*jwt.UserClaims, error) { return f.c.decideAt(request(t, kp, "10.2.0.1_dc2-a"), "dc2") }, at.Add(5 * time.Minute)},
	} {
		uc, err := tc.uc()
		if err != nil {
			t.Fatalf("%s: refused: %v", tc.what, err)
		}
		if uc.Expires != tc.want.Unix() {
			t.Errorf("%s: expires %v, want %v", tc.what, time.Unix(uc.Expires, 0).UTC(), tc.want)
		}
	}
	// A site TTL at or above the user TTL changes nothing.
	f.c.siteTTL = 2 * time.Hour
	if uc, err := f.c.decideAt(request(t, kp, "10.2.0.1_dc2-a"), "dc2"); err != nil || uc.Expires != at.Add(time.Hour).Unix() {
		t.Errorf("site TTL above the user TTL: %v, expires %v", err, uc)
	}
}

// TestSiteUserTTLConfig: the site TTL defaults to DefaultSiteUserTTL and
// is never longer than the user TTL.
func TestSiteUserTTLConfig(t *testing.T) {
	for _, tc := range []struct {
		user, site, want time.Duration
	}{
		{0, 0, DefaultSiteUserTTL},
		{0, 30 * time.Second, 30 * time.Second},
		{time.Minute, 0, time.Minute},
		{10 * time.Minute, 2 * time.Hour, 10 * time.Minute},
	} {
		s, err := New(Config{DataDir: t.TempDir(), UserTTL: tc.user, SiteUserTTL: tc.site})
		if err != nil {
			t.Fatal(err)
		}
		if s.cfg.SiteUserTTL != tc.want {
			t.Errorf("UserTTL %v, SiteUserTTL %v: got %v, want %v", tc.user, tc.site, s.cfg.SiteUserTTL, tc.want)
		}
	}
}
