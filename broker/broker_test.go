package broker_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

func validAuth(t *testing.T) broker.AuthKeys {
	t.Helper()
	return brokertest.NewKeys(t).Auth()
}

func TestAuthKeysValidate(t *testing.T) {
	good := validAuth(t)
	tests := []struct {
		name    string
		mutate  func(*broker.AuthKeys)
		wantErr string
	}{
		{"valid", func(*broker.AuthKeys) {}, ""},
		{"no xkey is fine", func(k *broker.AuthKeys) { k.CalloutXKey = "" }, ""},
		{"missing issuer", func(k *broker.AuthKeys) { k.CalloutIssuer = "" }, "callout_issuer"},
		{"issuer is a user key", func(k *broker.AuthKeys) { k.CalloutIssuer = good.SysUser }, "callout_issuer"},
		{"missing sys user", func(k *broker.AuthKeys) { k.SysUser = "" }, "sys_user"},
		{"control user is an account key", func(k *broker.AuthKeys) { k.ControlUser = good.CalloutIssuer }, "control_user"},
		{"short fleet user", func(k *broker.AuthKeys) { k.FleetUser = good.FleetUser[:55] }, "fleet_user"},
		{"xkey is a user key", func(k *broker.AuthKeys) { k.CalloutXKey = good.SysUser }, "callout_xkey"},
		{"xkey truncated", func(k *broker.AuthKeys) { k.CalloutXKey = good.CalloutXKey[:10] }, "callout_xkey"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := good
			tt.mutate(&k)
			err := k.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error naming %q", err, tt.wantErr)
			}
		})
	}
}

// TestAuthKeysValidateChecksum: a key with the right length and prefix but
// a broken checksum (a typo in broker-auth.json) should be refused.
func TestAuthKeysValidateChecksum(t *testing.T) {
	good := validAuth(t)
	k := good
	k.CalloutIssuer = flipLast(good.CalloutIssuer)
	if nkeys.IsValidPublicAccountKey(k.CalloutIssuer) {
		t.Fatal("test key still valid")
	}
	if err := k.Validate(); err == nil {
		t.Fatalf("Validate accepted the corrupted issuer key %q", k.CalloutIssuer)
	}
}

func flipLast(s string) string {
	c := s[len(s)-1]
	r := byte('A')
	if c == 'A' {
		r = 'B'
	}
	return s[:len(s)-1] + string(r)
}

func TestOptionsErrors(t *testing.T) {
	tests := []struct {
		name    string
		cfg     func(*broker.Config)
		wantErr string
	}{
		{"no auth", func(c *broker.Config) { c.Auth = broker.AuthKeys{} }, "callout_issuer"},
		{"bad auth key", func(c *broker.Config) { c.Auth.SysUser = "UABC" }, "sys_user"},
		{"listen without port", func(c *broker.Config) { c.Listen = "127.0.0.1" }, "want HOST:PORT"},
		{"listen port not a number", func(c *broker.Config) { c.Listen = "127.0.0.1:http" }, "not a number"},
		{"listen port too big", func(c *broker.Config) { c.Listen = "127.0.0.1:65536" }, "not a number from 0 to 65535"},
		{"listen port negative", func(c *broker.Config) { c.Listen = "127.0.0.1:-1" }, "not a number from 0 to 65535"},
		{"routes without cluster", func(c *broker.Config) { c.Routes = []string{"nats-route://127.0.0.1:6222"} }, "without a cluster listen"},
		{"bad cluster listen", func(c *broker.Config) { c.ClusterListen = "nowhere" }, "cluster listen address"},
		{"bad leaf listen", func(c *broker.Config) { c.LeafListen = "127.0.0.1:x" }, "leaf listen address"},
		{"leaf listen without sites", func(c *broker.Config) { c.LeafListen = "127.0.0.1:7422" }, "at least one leaf site"},
		{"leaf sites without listen", func(c *broker.Config) { c.LeafSites = []broker.LeafSite{{Name: "dc2", PasswordBcrypt: testHash}} }, "without a leaf listen"},
		{"hub URL with credentials", func(c *broker.Config) {
			c.Hub = &broker.LeafHub{URLs: []string{"nats-leaf://dc2.fleet:pw@127.0.0.1:7422"}, Site: "dc2", Secret: "s3cret-s3cret"}
		}, "carries credentials"},
		{"bad site name", func(c *broker.Config) {
			c.LeafListen, c.LeafSites = "127.0.0.1:7422", []broker.LeafSite{{Name: "dc 2", PasswordBcrypt: testHash}}
		}, `leaf site name "dc 2"`},
		{"site listed twice", func(c *broker.Config) {
			c.LeafListen, c.LeafSites = "127.0.0.1:7422", []broker.LeafSite{{Name: "dc2", PasswordBcrypt: testHash}, {Name: "dc2", PasswordBcrypt: testHash}}
		}, "listed twice"},
		{"plain password", func(c *broker.Config) {
			c.LeafListen, c.LeafSites = "127.0.0.1:7422", []broker.LeafSite{{Name: "dc2", PasswordBcrypt: "hunter2"}}
		}, "not a bcrypt hash"},
		{"hub and site at once", func(c *broker.Config) {
			c.LeafListen, c.LeafSites = "127.0.0.1:7422", []broker.LeafSite{{Name: "dc2", PasswordBcrypt: testHash}}
			c.Hub = &broker.LeafHub{URLs: []string{"nats-leaf://127.0.0.1:7423"}, Site: "dc3", Secret: "s"}
		}, "not both"},
		{"site without hub URL", func(c *broker.Config) { c.Hub = &broker.LeafHub{Site: "dc2", Secret: "s"} }, "hub's leaf URL"},
		{"site with a bad hub URL", func(c *broker.Config) {
			c.Hub = &broker.LeafHub{URLs: []string{"http://hub:7422"}, Site: "dc2", Secret: "s"}
		}, "want nats-leaf://host:port"},
		{"site without secret", func(c *broker.Config) {
			c.Hub = &broker.LeafHub{URLs: []string{"nats-leaf://hub:7422"}, Site: "dc2"}
		}, "no secret"},
		{"bad monitor listen", func(c *broker.Config) { c.MonitorListen = ":99999" }, "monitor listen address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := broker.Config{Listen: "127.0.0.1:0", Auth: validAuth(t)}
			tt.cfg(&cfg)
			opts, err := broker.Options(&cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Options: got (%v, %v), want an error containing %q", opts != nil, err, tt.wantErr)
			}
			if _, err := broker.New(cfg); err == nil {
				t.Fatal("New accepted the configuration Options refused")
			}
		})
	}
}

func TestOptionsDefaults(t *testing.T) {
	cfg := broker.Config{Auth: validAuth(t)}
	opts, err := broker.Options(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := opts.PingInterval, 13*time.Second; got != want {
		t.Errorf("PingInterval: got %v, want %v", got, want)
	}
	if got, want := opts.MaxPingsOut, 1; got != want {
		t.Errorf("MaxPingsOut: got %d, want %d", got, want)
	}
	if got, want := opts.AuthTimeout, 5.0; got != want {
		t.Errorf("AuthTimeout: got %v, want %v", got, want)
	}
	// Options leaves cfg alone (TestOptionsLeavesConfigAlone): the
	// defaults it used are WithDefaults'.
	cfg = cfg.WithDefaults()
	if got, want := cfg.Listen, "127.0.0.1:4222"; got != want {
		t.Errorf("Listen default: got %q, want %q", got, want)
	}
	if opts.Host != "127.0.0.1" || opts.Port != 4222 {
		t.Errorf("host/port: got %s:%d, want 127.0.0.1:4222", opts.Host, opts.Port)
	}
	// Dead-client detection: within the documented 30 s of silence, and
	// no later than the 40 s the old defaults (10 s, 2) gave after a
	// client's last word — the server skips its ping to a client it heard
	// from within the interval, so one interval more (broker.go).
	if d := cfg.PingInterval * time.Duration(cfg.MaxPingsOut+1); d > 30*time.Second {
		t.Errorf("dead-client bound %v after an interval of silence exceeds 30s", d)
	}
	if d := cfg.PingInterval * time.Duration(cfg.MaxPingsOut+2); d > 40*time.Second {
		t.Errorf("dead-client bound %v after the last word exceeds 40s", d)
	}
	// Fewest pings for that bound: agents ping every 20 s and the server
	// skips its own after theirs, so a link carries a ping every
	// min(PingInterval, 20 s); the old defaults had one every 10 s.
	if cfg.PingInterval <= 10*time.Second {
		t.Errorf("ping interval %v: no fewer pings than the old 10 s", cfg.PingInterval)
	}
	// Nearly every subject published is new (calls, replies, presence
	// events): a subject cache only makes each wildcard subscription
	// walk it (issue #17).
	if !opts.NoSublistCache {
		t.Error("NoSublistCache is off: every agent's wildcard subscription walks the account's subject cache")
	}
	if opts.SystemAccount != broker.SystemAccount {
		t.Errorf("system account: got %q, want %q", opts.SystemAccount, broker.SystemAccount)
	}
	if opts.AuthCallout == nil {
		t.Fatal("auth callout is not configured")
	}
	if got, want := opts.AuthCallout.Account, broker.ControlAccount; got != want {
		t.Errorf("callout account: got %q, want %q", got, want)
	}
	if got, want := opts.AuthCallout.Issuer, cfg.Auth.CalloutIssuer; got != want {
		t.Errorf("callout issuer: got %q, want %q", got, want)
	}
	if got, want := opts.AuthCallout.XKey, cfg.Auth.CalloutXKey; got != want {
		t.Errorf("callout xkey: got %q, want %q", got, want)
	}
	bypass := map[string]bool{}
	for _, u := range opts.AuthCallout.AuthUsers {
		bypass[u] = true
	}
	for _, u := range []string{cfg.Auth.SysUser, cfg.Auth.ControlUser, cfg.Auth.FleetUser, cfg.Auth.CallsUser, cfg.Auth.AnnounceUser} {
		if !bypass[u] {
			t.Errorf("service user %s does not bypass the callout", u)
		}
	}
	if len(bypass) != 5 {
		t.Errorf("callout bypass list: got %d users, want 5", len(bypass))
	}
}

func TestOptionsKeepExplicitValues(t *testing.T) {
	cfg := broker.Config{Listen: "127.0.0.1:0", Auth: validAuth(t), PingInterval: time.Second, MaxPingsOut: 5, AuthTimeout: 250 * time.Millisecond, MaxPayload: 4096}
	opts, err := broker.Options(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if opts.PingInterval != time.Second || opts.MaxPingsOut != 5 || opts.AuthTimeout != 0.25 || opts.MaxPayload != 4096 {
		t.Fatalf("got ping %v, pings out %d, auth timeout %v, max payload %d; want 1s, 5, 0.25, 4096",
			opts.PingInterval, opts.MaxPingsOut, opts.AuthTimeout, opts.MaxPayload)
	}
	if opts.Port <= 0 && opts.Port != -1 {
		t.Fatalf("port 0 should map to a random port, got %d", opts.Port)
	}
}

func TestOptionsCluster(t *testing.T) {
	cfg := broker.Config{Listen: "127.0.0.1:0", Auth: validAuth(t), ClusterListen: "127.0.0.1:0", ClusterSecret: testClusterSecret,
		Routes: []string{"nats-route://127.0.0.1:6222", "nats-route://127.0.0.1:6223"}, LeafListen: "127.0.0.1:7422",
		LeafSites: []broker.LeafSite{{Name: "dc2", PasswordBcrypt: testHash}}, MonitorListen: "127.0.0.1:8222"}
	opts, err := broker.Options(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := opts.Cluster.Name, "commandcontrol"; got != want {
		t.Errorf("cluster name: got %q, want %q", got, want)
	}
	if got := len(opts.Routes); got != 2 {
		t.Errorf("routes: got %d, want 2", got)
	}
	if opts.LeafNode.Port != 7422 || opts.HTTPPort != 8222 {
		t.Errorf("leaf/monitor ports: got %d/%d, want 7422/8222", opts.LeafNode.Port, opts.HTTPPort)
	}
}

// testHash has the shape of a bcrypt hash; Options checks no more.
const testHash = "$2a$04$e6nB5rC0u6Vf4IuqJd7Iy.Uv5tN0k2QmD2wKQxR7i5jv3E0Fq9kXK"

// TestOptionsLeaf: a hub has no leaf users of its own (the callout
// authorises every link) and an account of its own per site for the
// site's SYS and CONTROL links; a site gets one remote per account, each
// with its user.
func TestOptionsLeaf(t *testing.T) {
	hub := broker.Config{Auth: validAuth(t), LeafListen: "127.0.0.1:7422",
		LeafSites: []broker.LeafSite{{Name: "dc2", PasswordBcrypt: testHash}, {Name: "dc3", PasswordBcrypt: testHash}}}
	opts, err := broker.Options(&hub)
	if err != nil {
		t.Fatal(err)
	}
	if len(opts.LeafNode.Users) != 0 || opts.LeafNode.Username != "" {
		t.Errorf("hub leaf users: got %d, want none (the callout authorises links)", len(opts.LeafNode.Users))
	}
	var accounts []string
	for _, a := range opts.Accounts {
		accounts = append(accounts, a.Name)
	}
	for _, want := range []string{"SITE_dc2_SYS", "SITE_dc2_CONTROL", "SITE_dc3_SYS", "SITE_dc3_CONTROL"} {
		if !slices.Contains(accounts, want) {
			t.Errorf("hub accounts %v lack %s", accounts, want)
		}
	}
	for user, want := range map[string]string{"dc2.sys": "SITE_dc2_SYS", "dc2.control": "SITE_dc2_CONTROL", "dc2.fleet": "FLEET"} {
		site, acc, ok := broker.ParseLeafUser(user)
		got, ok2 := broker.LeafLinkAccount(site, acc)
		if !ok || !ok2 || site != "dc2" || got != want {
			t.Errorf("leaf user %s: bound to %q (%v %v), want %s", user, got, ok, ok2, want)
		}
	}
	for _, bad := range []string{"dc2", "dc2.SYS.x", "dc2.jetstream", ".fleet", "d c2.fleet", "dc2.FLEET"} {
		if _, _, ok := broker.ParseLeafUser(bad); ok {
			t.Errorf("leaf user %q accepted", bad)
		}
	}
	site := broker.Config{Auth: validAuth(t), AllowPlaintextLeaf: true, Hub: &broker.LeafHub{URLs: []string{"nats-leaf://hub-a:7422", "nats-leaf://hub-b:7422"}, Site: "dc2", Secret: "s3cret"}}
	opts, err = broker.Options(&site)
	if err != nil {
		t.Fatal(err)
	}
	if len(opts.LeafNode.Remotes) != 3 {
		t.Fatalf("site remotes: got %d, want one per account", len(opts.LeafNode.Remotes))
	}
	for _, r := range opts.LeafNode.Remotes {
		if len(r.URLs) != 2 {
			t.Fatalf("remote %s: %d URLs, want 2", r.LocalAccount, len(r.URLs))
		}
		u := r.URLs[0]
		pw, _ := u.User.Password()
		if u.User.Username() != broker.LeafUser("dc2", r.LocalAccount) || pw != "s3cret" || u.Host != "hub-a:7422" {
			t.Errorf("remote %s: got %s", r.LocalAccount, u.Redacted())
		}
	}
}

// TestFailsClosedWithoutControlService: with nobody answering the callout,
// an unknown nkey is refused once the auth timeout passes — never let in.
func TestFailsClosedWithoutControlService(t *testing.T) {
	b, _ := brokertest.Start(t, brokertest.WithAuthTimeout(500*time.Millisecond))
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	start := time.Now()
	nc, err := nats.Connect(b.ClientURL(), nats.Nkey(pub, kp.Sign), nats.Name("10.0.0.9_x"), nats.Timeout(5*time.Second), nats.NoReconnect())
	if err == nil {
		nc.Close()
		t.Fatal("an unknown nkey connected with no control service running")
	}
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("got %v, want an authorization error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refusal took %v; the auth timeout is 500ms", d)
	}
}

// TestServiceUserNeedsItsKey: knowing a service user's public key is not
// enough; the nonce must be signed with its seed.
func TestServiceUserNeedsItsKey(t *testing.T) {
	b, keys := brokertest.Start(t, brokertest.WithAuthTimeout(500*time.Millisecond))
	other, _ := nkeys.CreateUser()
	pub, _ := keys.Sys.PublicKey()
	nc, err := nats.Connect(b.ClientURL(), nats.Nkey(pub, other.Sign), nats.Timeout(5*time.Second), nats.NoReconnect())
	if err == nil {
		nc.Close()
		t.Fatal("connected as the SYS user with a signature from another key")
	}
}

func TestNoPasswordlessAccess(t *testing.T) {
	b, _ := brokertest.Start(t, brokertest.WithAuthTimeout(500*time.Millisecond))
	nc, err := nats.Connect(b.ClientURL(), nats.Timeout(5*time.Second), nats.NoReconnect())
	if err == nil {
		nc.Close()
		t.Fatal("a client without credentials connected")
	}
}

func TestRunStopsWithContext(t *testing.T) {
	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0", Auth: validAuth(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !b.Server().ReadyForConnections(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("broker not ready within 10s")
		}
	}
	if b.ClusterURL() != "" {
		t.Errorf("ClusterURL without a cluster: got %q, want empty", b.ClusterURL())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
	if b.Server().Running() {
		t.Fatal("server still running after Run returned")
	}
}

func TestClusterURL(t *testing.T) {
	b, _ := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) { c.ClusterListen, c.ClusterSecret = "127.0.0.1:0", testClusterSecret }))
	if u := b.ClusterURL(); !strings.HasPrefix(u, "nats-route://127.0.0.1:") {
		t.Fatalf("ClusterURL: got %q, want nats-route://127.0.0.1:<port>", u)
	}
}

// TestLoadLeafSitesChecksEntries: the leaf sites file cc-control reads
// (behind an external hub too) is checked like the hub's: a bad verifier,
// an entry with no hash, or one with two hashes (possibly of two secrets,
// one left from before a rotation) is refused, naming the site.
func TestLoadLeafSitesChecksEntries(t *testing.T) {
	_, good, err := broker.NewLeafSite("dc2")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, body, want string
	}{
		{"bad verifier", `[{"site":"dc2","secret_sha256":"abc"}]`, "not 64 hex digits"},
		{"no hash", `[{"site":"dc2"}]`, "neither secret_sha256 nor password_bcrypt"},
		{"two hashes", `[{"site":"dc2","secret_sha256":"` + good.SecretSHA256 + `","password_bcrypt":"` + testHash + `"}]`, "both secret_sha256 and password_bcrypt"},
		{"bad name", `[{"site":"dc 2","secret_sha256":"` + good.SecretSHA256 + `"}]`, `site name "dc 2"`},
	} {
		path := filepath.Join(t.TempDir(), "sites.json")
		if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := broker.LoadLeafSites(path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
	path := filepath.Join(t.TempDir(), "sites.json")
	if err := os.WriteFile(path, []byte(`[{"site":"dc2","secret_sha256":"`+good.SecretSHA256+`"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if sites, err := broker.LoadLeafSites(path); err != nil || len(sites) != 1 {
		t.Fatalf("a good entry: %v %v", sites, err)
	}
}
