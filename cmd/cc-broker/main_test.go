package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/controlsvc"
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
	cfgFile := writeFile(t, `{"auth":"`+auth+`","listen":"127.0.0.1:5222","name":"edge","routes":["nats-route://127.0.0.1:6222"],"cluster_listen":"127.0.0.1:6223","ping_interval":"3s","max_pings_out":4}`)
	cfg, _, err := parse([]string{"--config", cfgFile, "--listen", "127.0.0.1:7222"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:7222" {
		t.Errorf("listen: got %q, want the flag's value to win", cfg.Listen)
	}
	if cfg.Name != "edge" || cfg.ClusterListen != "127.0.0.1:6223" || len(cfg.Routes) != 1 || cfg.PingInterval != 3*time.Second || cfg.MaxPingsOut != 4 {
		t.Errorf("config file values not applied: %+v", cfg)
	}
}

// TestRunServesUntilCancelled starts the real broker on a free port.
func TestRunServesUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--auth", authFile(t), "--listen", "127.0.0.1:0"}, io.Discard) }()
	time.Sleep(300 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return")
	}
}
