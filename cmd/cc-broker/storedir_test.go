package main

import (
	"io"
	"testing"
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
