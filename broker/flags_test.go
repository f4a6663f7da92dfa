package broker_test

import (
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
)

// parseFlags registers f on a new flag set, parses args and builds the
// Config.
func parseFlags(f *broker.Flags, args ...string) (broker.Config, error) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.Register(fs)
	if err := fs.Parse(args); err != nil {
		return broker.Config{}, err
	}
	return f.Config()
}

func writeJSON(t *testing.T, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// authFileFor writes auth as the control service writes broker-auth.json.
func authFileFor(t *testing.T, auth broker.AuthKeys) string {
	t.Helper()
	return writeJSON(t, broker.AuthFile, auth)
}

// TestFlagsSameForBoth: an embedded broker (cc-control's) and a
// stand-alone one (cc-broker's) read the shared flags and the config file
// alike; the stand-alone one adds its auth file.
func TestFlagsSameForBoth(t *testing.T) {
	auth := validAuth(t)
	sites := writeJSON(t, "sites.json", []broker.LeafSite{{Name: "dc2", PasswordBcrypt: testHash}})
	secret := filepath.Join(t.TempDir(), "cluster.secret")
	if err := os.WriteFile(secret, []byte(testClusterSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := writeJSON(t, "broker.json", map[string]any{
		"listen": "127.0.0.1:5222", "name": "edge", "routes": []string{"nats-route://10.0.0.2:6222"}, "ping_interval": "3s",
		"max_pings_out": 4, "max_payload": 4194304, "store_dir": "/var/lib/js", "monitor_listen": "127.0.0.1:8222",
		"tls":      map[string]any{"cert": "file.pem", "key": "file-key.pem", "ca": "ca.pem", "verify": true},
		"leaf_tls": map[string]any{"ca": "lca.pem"}, "leaf_sites": []broker.LeafSite{{Name: "dc3", PasswordBcrypt: testHash}},
		"websocket_listen": "127.0.0.1:9222", "websocket_origins": []string{"https://a.example", " https://b.example:8443"},
		"allow_plaintext_websocket": true,
	})
	shared := []string{"--config", file, "--listen", "127.0.0.1:7222", "--cluster-name", "c1", "--cluster-listen", "127.0.0.1:6222",
		"--cluster-secret-file", secret, "--cluster-tls-ca", "rca.pem", "--leaf-listen", "127.0.0.1:7422", "--leaf-sites", sites,
		"--leaf-tls-cert", "leaf.pem", "--leaf-tls-key", "leaf-key.pem", "--leaf-tls-verify", "--tls-cert", "flag.pem",
		"--allow-plaintext-leaf", "--max-pings-out", "3", "--websocket-listen", "0.0.0.0:8443"}
	want := broker.Config{
		Listen: "127.0.0.1:7222", Name: "edge", ClusterName: "c1", ClusterListen: "127.0.0.1:6222",
		Routes: []string{"nats-route://10.0.0.2:6222"}, ClusterSecret: testClusterSecret, LeafListen: "127.0.0.1:7422",
		LeafSites:     []broker.LeafSite{{Name: "dc3", PasswordBcrypt: testHash}, {Name: "dc2", PasswordBcrypt: testHash}},
		MonitorListen: "127.0.0.1:8222", PingInterval: 3 * time.Second, MaxPingsOut: 3, MaxPayload: 4194304, StoreDir: "/var/lib/js",
		TLS:                broker.TLSFiles{CertFile: "flag.pem", KeyFile: "file-key.pem", CAFile: "ca.pem", Verify: true},
		ClusterTLS:         broker.TLSFiles{CAFile: "rca.pem"},
		LeafTLS:            broker.TLSFiles{CertFile: "leaf.pem", KeyFile: "leaf-key.pem", CAFile: "lca.pem", Verify: true},
		AllowPlaintextLeaf: true,
		WebSocketListen:    "0.0.0.0:8443", WebSocketOrigins: []string{"https://a.example", "https://b.example:8443"},
		AllowPlaintextWebSocket: true,
	}
	embedded, err := parseFlags(&broker.Flags{}, shared...)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(embedded, want) {
		t.Errorf("embedded:\n got  %+v\n want %+v", embedded, want)
	}
	standalone, err := parseFlags(&broker.Flags{Standalone: true}, append([]string{"--auth", authFileFor(t, auth)}, shared...)...)
	if err != nil {
		t.Fatal(err)
	}
	want.Auth = auth
	if !reflect.DeepEqual(standalone, want) {
		t.Errorf("stand-alone:\n got  %+v\n want %+v", standalone, want)
	}
}

// TestFlagsDefaults: with no flags, the defaults both programs had.
func TestFlagsDefaults(t *testing.T) {
	cfg, err := parseFlags(&broker.Flags{})
	if err != nil {
		t.Fatal(err)
	}
	want := broker.Config{Listen: "127.0.0.1:4222", ClusterName: "commandcontrol", PingInterval: broker.DefaultPingInterval, MaxPingsOut: broker.DefaultMaxPingsOut}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got %+v, want %+v", cfg, want)
	}
}

// TestFlagsEmbeddedRefusesStandaloneOnly: an embedded broker has no --auth
// or --hub flags, and its config file may not name them either.
func TestFlagsEmbeddedRefusesStandaloneOnly(t *testing.T) {
	for _, args := range [][]string{{"--auth", "x.json"}, {"--hub", "nats-leaf://h:7422"}, {"--site", "dc2"}, {"--hub-tls-ca", "ca.pem"}} {
		if _, err := parseFlags(&broker.Flags{}, args...); err == nil || !strings.Contains(err.Error(), "not defined") {
			t.Errorf("%v: got %v, want an undefined flag", args, err)
		}
	}
	for field, body := range map[string]map[string]any{
		`"auth" is for cc-broker`:     {"auth": "broker-auth.json"},
		`"hub" makes a site's broker`: {"hub": map[string]any{"site": "dc2"}},
	} {
		_, err := parseFlags(&broker.Flags{}, "--config", writeJSON(t, "c.json", body))
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%v: got %v, want %q", body, err, field)
		}
	}
}

// TestFlagsWebSocket: the WebSocket flags win over the config file's
// keys, origins are a comma-separated list, and with neither nothing is
// served.
func TestFlagsWebSocket(t *testing.T) {
	file := writeJSON(t, "broker.json", map[string]any{
		"websocket_listen": "127.0.0.1:9222", "websocket_origins": []string{"https://file.example"},
	})
	cfg, err := parseFlags(&broker.Flags{}, "--config", file, "--websocket-origins", "https://a.example, https://b.example:8443,",
		"--allow-plaintext-websocket")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.WebSocketListen != "127.0.0.1:9222" || !reflect.DeepEqual(cfg.WebSocketOrigins, []string{"https://a.example", "https://b.example:8443"}) || !cfg.AllowPlaintextWebSocket {
		t.Errorf("got listen %q, origins %q, plaintext %v; want the file's listen, the flag's origins, plaintext allowed",
			cfg.WebSocketListen, cfg.WebSocketOrigins, cfg.AllowPlaintextWebSocket)
	}
	cfg, err = parseFlags(&broker.Flags{Standalone: true}, "--auth", authFileFor(t, validAuth(t)), "--config", file)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.WebSocketListen != "127.0.0.1:9222" || !reflect.DeepEqual(cfg.WebSocketOrigins, []string{"https://file.example"}) || cfg.AllowPlaintextWebSocket {
		t.Errorf("stand-alone from the file: got listen %q, origins %q, plaintext %v", cfg.WebSocketListen, cfg.WebSocketOrigins, cfg.AllowPlaintextWebSocket)
	}
}
