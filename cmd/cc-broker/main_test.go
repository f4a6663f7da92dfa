package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

func authFile(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := controlsvc.LoadOrCreateKeys(dir); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, controlsvc.BrokerAuthFile)
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "broker.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseErrorsNameTheProblem(t *testing.T) {
	auth := authFile(t)
	bad := writeFile(t, `{"callout_issuer":"nope"}`)
	tests := []struct {
		args []string
		want string
	}{
		{nil, "--auth FILE is required"},
		{[]string{"--auth", "/no/such/file.json"}, "cc-control writes it"},
		{[]string{"--auth", bad}, "callout_issuer"},
		{[]string{"--auth", auth, "--ping-interval", "soon"}, `ping interval "soon"`},
		{[]string{"--auth", auth, "--config", writeFile(t, `{"listen": 4222}`)}, "config file"},
		{[]string{"--auth", auth, "--config", writeFile(t, `{"lisen": "x"}`)}, `unknown field "lisen"`},
		{[]string{"--auth", auth, "--config", "/no/such.json"}, "config"},
		{[]string{"--auth", auth, "stray"}, `unexpected argument "stray"`},
		{[]string{"--auth", auth, "--max-payload", "lots"}, "at least 1024"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, _, err := parse(tt.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestConfigFileAndFlags(t *testing.T) {
	auth := authFile(t)
	cfgFile := writeFile(t, `{"auth":"`+auth+`","listen":"127.0.0.1:5222","name":"edge","routes":["nats-route://127.0.0.1:6222"],"cluster_listen":"127.0.0.1:6223","ping_interval":"3s","max_pings_out":4,"max_payload":4194304}`)
	cfg, _, err := parse([]string{"--config", cfgFile, "--listen", "127.0.0.1:7222"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:7222" {
		t.Errorf("listen: got %q, want the flag's value to win", cfg.Listen)
	}
	if cfg.Name != "edge" || cfg.ClusterListen != "127.0.0.1:6223" || len(cfg.Routes) != 1 || cfg.PingInterval != 3*time.Second || cfg.MaxPingsOut != 4 || cfg.MaxPayload != 4194304 {
		t.Errorf("config file values not applied: %+v", cfg)
	}
}

// TestRunServesUntilCancelled starts the real broker on a free port,
// waits until it greets a client there, and stops it by cancelling: run
// returns and the port no longer serves.
func TestRunServesUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var log stacktest.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--auth", authFile(t), "--listen", "127.0.0.1:0"}, &log) }()
	listening := regexp.MustCompile(`Listening for client connections on (127\.0\.0\.1:\d+)`)
	var addr string
	stacktest.WaitFor(t, "the broker to listen (its log says where)", 10*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("run returned before it was cancelled: %v\n%s", err, log.String())
		default:
		}
		if m := listening.FindStringSubmatch(log.String()); m != nil {
			addr = m[1]
		}
		return addr != ""
	})
	if greeting := natsGreeting(addr); !strings.HasPrefix(greeting, "INFO {") {
		t.Fatalf("a client at %s got %q, want the broker's INFO", addr, greeting)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return")
	}
	if greeting := natsGreeting(addr); greeting != "" {
		t.Fatalf("%s still serves after run returned: %q", addr, greeting)
	}
}

// natsGreeting is the first line a client connecting to addr reads ("" when
// nothing answers there).
func natsGreeting(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return line
}

// TestLeafSiteCommand: leaf-site writes a private secret file, never
// overwrites one, and prints the hub's entry, which matches the secret.
func TestLeafSiteCommand(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dc2.secret")
	var out strings.Builder
	if err := leafSite([]string{"dc2", "--secret-out", path}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	secret, err := broker.ReadLeafSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(secret))
	for _, want := range []string{`"site":"dc2"`, `"secret_sha256":"` + hex.EncodeToString(sum[:]) + `"`, "--hub nats-leaf://HUB:7422 --site dc2 --site-secret-file " + path} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("leaf-site output lacks %q:\n%s", want, out.String())
		}
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v %v, want mode 0600", st, err)
	}
	if err := leafSite([]string{"dc2", "--secret-out", path}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "never overwritten") {
		t.Fatalf("second leaf-site on the same file: got %v, want a refusal", err)
	}
	if err := leafSite([]string{"dc 2", "--secret-out", filepath.Join(dir, "x")}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), `site name "dc 2"`) {
		t.Fatalf("bad name: got %v", err)
	}
	if err := leafSite(nil, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "give the site's name") {
		t.Fatalf("no name: got %v", err)
	}
}

// TestLeafFlagsAndFiles: a hub's sites come from the config and the
// --leaf-sites file; a site's hub from flags or the config's "hub".
func TestLeafFlagsAndFiles(t *testing.T) {
	auth := authFile(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "dc2.secret")
	var entry strings.Builder
	if err := leafSite([]string{"dc2", "--secret-out", secret, "--json"}, &entry, io.Discard); err != nil {
		t.Fatal(err)
	}
	sites := filepath.Join(dir, "sites.json")
	if err := os.WriteFile(sites, []byte("["+entry.String()+"]"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := parse([]string{"--auth", auth, "--leaf-listen", "127.0.0.1:7422", "--leaf-sites", sites}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.LeafSites) != 1 || cfg.LeafSites[0].Name != "dc2" {
		t.Errorf("hub sites: %+v", cfg.LeafSites)
	}
	cfg, _, err = parse([]string{"--auth", auth, "--hub", "nats-leaf://127.0.0.1:7422", "--site", "dc2", "--site-secret-file", secret}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hub == nil || cfg.Hub.Site != "dc2" || len(cfg.Hub.Secret) < 40 || len(cfg.Hub.URLs) != 1 {
		t.Errorf("site's hub: %+v", cfg.Hub)
	}
	file := writeFile(t, `{"auth":"`+auth+`","hub":{"urls":["nats-leaf://10.0.0.1:7422"],"site":"dc2","secret_file":"`+secret+`"}}`)
	cfg, _, err = parse([]string{"--config", file}, io.Discard)
	if err != nil || cfg.Hub == nil || cfg.Hub.URLs[0] != "nats-leaf://10.0.0.1:7422" {
		t.Fatalf("site from the config file: %+v %v", cfg, err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--auth", auth, "--site", "dc2", "--site-secret-file", secret}, "hub's leaf URL"},
		{[]string{"--auth", auth, "--hub", "nats-leaf://h:7422", "--site-secret-file", secret}, "--site NAME"},
		{[]string{"--auth", auth, "--hub", "nats-leaf://h:7422", "--site", "dc2"}, "--site-secret-file"},
		{[]string{"--auth", auth, "--hub", "nats-leaf://h:7422", "--site", "dc2", "--site-secret-file", sites + ".missing"}, "no such file"},
		{[]string{"--auth", auth, "--leaf-listen", "127.0.0.1:7422", "--leaf-sites", secret}, "want a JSON list"},
	} {
		if _, _, err := parse(tt.args, io.Discard); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parse %v: got %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
	if err := os.Chmod(secret, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := parse([]string{"--auth", auth, "--hub", "nats-leaf://h:7422", "--site", "dc2", "--site-secret-file", secret}, io.Discard); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable secret: got %v", err)
	}
}
