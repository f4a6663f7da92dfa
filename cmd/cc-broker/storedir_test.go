package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/broker/brokertest"
)

// TestStoreDirFlagAndFile: --store-dir (or store_dir in the config file)
// turns on JetStream storage for the control service's audit log.
func TestStoreDirFlagAndFile(t *testing.T) {
	auth := authFile(t)
	cfg, _, err := parse([]string{"--auth", auth, "--store-dir", "/tmp/js-flag"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StoreDir != "/tmp/js-flag" {
		t.Errorf("--store-dir: got %q", cfg.StoreDir)
	}
	cfgFile := writeFile(t, `{"auth":"`+auth+`","store_dir":"/tmp/js-file"}`)
	if cfg, _, err = parse([]string{"--config", cfgFile}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if cfg.StoreDir != "/tmp/js-file" {
		t.Errorf("store_dir: got %q", cfg.StoreDir)
	}
}

// TestBrokerFlagsHelp: --help lists every flag of the broker set
// cc-control's embedded broker shares, with the same words (the
// stand-alone set: --auth and a site's flags too; --config's help lists
// auth and hub among its fields).
func TestBrokerFlagsHelp(t *testing.T) {
	var help strings.Builder
	if _, _, err := parse([]string{"--help"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	missing, n := brokertest.MissingFlagHelp(help.String(), true)
	for _, entry := range missing {
		t.Errorf("cc-broker --help lacks the broker flag entry\n%s", entry)
	}
	if n < 25 {
		t.Errorf("only %d broker flags", n)
	}
}
