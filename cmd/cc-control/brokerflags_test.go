package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestBrokerFlagsAsCCBroker: --help lists every broker flag cc-broker
// has (but --auth and a site's) with cc-broker's words, from the one
// shared set.
func TestBrokerFlagsAsCCBroker(t *testing.T) {
	var help stacktest.Buffer
	if _, err := parseFlags([]string{"--help"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	missing, n := brokertest.MissingFlagHelp(help.String(), false)
	for _, entry := range missing {
		t.Errorf("cc-control --help lacks the broker flag entry\n%s", entry)
	}
	for _, name := range []string{"config", "store-dir", "name", "max-payload", "cluster-tls-ca", "leaf-tls-verify"} {
		if !strings.Contains(help.String(), "  -"+name+" ") && !strings.Contains(help.String(), "  -"+name+"\n") {
			t.Errorf("cc-control --help lacks --%s", name)
		}
	}
	if n < 20 {
		t.Errorf("only %d broker flags listed", n)
	}
}

// TestBrokerConfigMergesLikeCCBroker: cc-control's --config fills the
// embedded broker's settings not given as flags, flags winning, as
// cc-broker's does (cmd/cc-broker TestConfigFileAndFlags).
func TestBrokerConfigMergesLikeCCBroker(t *testing.T) {
	file := filepath.Join(t.TempDir(), "broker.json")
	if err := os.WriteFile(file, []byte(`{"listen":"127.0.0.1:5222","name":"edge","routes":["nats-route://127.0.0.1:6222"],"cluster_listen":"127.0.0.1:6223",
		"ping_interval":"3s","max_pings_out":4,"max_payload":4194304,"store_dir":"/tmp/js-file","tls":{"ca":"ca.pem"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags([]string{"--config", file, "--listen", "127.0.0.1:7222", "--store-dir", "/tmp/js-flag"}, &stacktest.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := o.broker.Config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:7222" || cfg.StoreDir != "/tmp/js-flag" {
		t.Errorf("listen %q, store dir %q: want the flags' values to win", cfg.Listen, cfg.StoreDir)
	}
	if cfg.Name != "edge" || cfg.ClusterListen != "127.0.0.1:6223" || len(cfg.Routes) != 1 || cfg.PingInterval != 3*time.Second ||
		cfg.MaxPingsOut != 4 || cfg.MaxPayload != 4194304 || cfg.TLS.CAFile != "ca.pem" {
		t.Errorf("config file values not applied: %+v", cfg)
	}
	if err := os.WriteFile(file, []byte(`{"auth":"broker-auth.json"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if o, err = parseFlags([]string{"--config", file}, &stacktest.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if _, err := o.broker.Config(); err == nil || !strings.Contains(err.Error(), `"auth" is for cc-broker`) {
		t.Errorf("auth in cc-control's config: got %v", err)
	}
}

// TestStoreDirFlag: the embedded broker keeps JetStream (the durable
// audit) where --store-dir says, not in <data>/jetstream.
func TestStoreDirFlag(t *testing.T) {
	data, store := t.TempDir(), t.TempDir()
	p := startProgram(t, "--data", data, "--listen", "127.0.0.1:0", "--store-dir", store)
	if ents, err := os.ReadDir(store); err != nil || len(ents) == 0 {
		t.Errorf("--store-dir %s holds nothing (%v): JetStream is elsewhere", store, err)
	}
	if _, err := os.Stat(filepath.Join(data, "jetstream")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("<data>/jetstream exists (%v) though --store-dir was given", err)
	}
	p.stop(t)
}
