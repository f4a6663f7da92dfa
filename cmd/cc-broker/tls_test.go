package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestClusterSecretCommand: cluster-secret writes a private secret file
// that --cluster-secret-file reads, and never overwrites one.
func TestClusterSecretCommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.secret")
	var out strings.Builder
	if err := clusterSecret([]string{"--secret-out", path}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "--cluster-secret-file "+path) {
		t.Errorf("cluster-secret output does not say how to use it:\n%s", out.String())
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v %v, want mode 0600", st, err)
	}
	if err := clusterSecret([]string{"--secret-out", path}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "never overwritten") {
		t.Fatalf("second cluster-secret on the same file: got %v, want a refusal", err)
	}
	cfg, _, err := parse([]string{"--auth", authFile(t), "--cluster-listen", "0.0.0.0:6222", "--cluster-secret-file", path}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.ClusterSecret) < 40 {
		t.Fatalf("cluster secret read: %q", cfg.ClusterSecret)
	}
	if _, err := broker.Options(cfg); err != nil {
		t.Fatalf("a cluster listener with the secret: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := parse([]string{"--auth", authFile(t), "--cluster-secret-file", path}, io.Discard); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable secret: got %v", err)
	}
	if _, _, err := parse([]string{"--auth", authFile(t), "--cluster-secret-file", path + ".missing"}, io.Discard); err == nil || !strings.Contains(err.Error(), "cc-broker cluster-secret") {
		t.Fatalf("missing secret: got %v", err)
	}
}

// TestTLSFlagsAndFile: every TLS setting comes from flags or the config
// file, flags winning; the hub's TLS from --hub-tls-* or hub.tls.
func TestTLSFlagsAndFile(t *testing.T) {
	auth := authFile(t)
	certs := stacktest.TLSFiles(t)
	cfg, _, err := parse([]string{"--auth", auth, "--tls-cert", certs.Cert, "--tls-key", certs.Key, "--tls-ca", certs.CA, "--tls-verify",
		"--cluster-tls-ca", "routes-ca.pem", "--leaf-tls-cert", "leaf.pem", "--leaf-tls-key", "leaf-key.pem", "--leaf-tls-verify", "--allow-plaintext-leaf"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA, Verify: true}
	if cfg.TLS != want || cfg.ClusterTLS.CAFile != "routes-ca.pem" || cfg.LeafTLS != (broker.TLSFiles{CertFile: "leaf.pem", KeyFile: "leaf-key.pem", Verify: true}) || !cfg.AllowPlaintextLeaf {
		t.Errorf("flags: %+v", cfg)
	}
	secret := filepath.Join(t.TempDir(), "dc2.secret")
	if err := os.WriteFile(secret, []byte("site-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, `{"auth":"`+auth+`","tls":{"cert":"a.pem","key":"a-key.pem","ca":"ca.pem","verify":true},
		"cluster_tls":{"cert":"r.pem","key":"r-key.pem","ca":"rca.pem"},"leaf_tls":{"ca":"lca.pem","verify":true},"allow_plaintext_leaf":true,
		"hub":{"urls":["nats-leaf://hub.example.net:7422"],"site":"dc2","secret_file":"`+secret+`","tls":{"ca":"hub-ca.pem","cert":"s.pem","key":"s-key.pem"}}}`)
	cfg, _, err = parse([]string{"--config", file, "--tls-cert", "flag.pem", "--hub-tls-ca", "flag-ca.pem"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS != (broker.TLSFiles{CertFile: "flag.pem", KeyFile: "a-key.pem", CAFile: "ca.pem", Verify: true}) {
		t.Errorf("tls: %+v", cfg.TLS)
	}
	if cfg.ClusterTLS != (broker.TLSFiles{CertFile: "r.pem", KeyFile: "r-key.pem", CAFile: "rca.pem"}) || cfg.LeafTLS != (broker.TLSFiles{CAFile: "lca.pem", Verify: true}) || !cfg.AllowPlaintextLeaf {
		t.Errorf("cluster/leaf tls: %+v %+v %v", cfg.ClusterTLS, cfg.LeafTLS, cfg.AllowPlaintextLeaf)
	}
	if cfg.HubTLS != (broker.TLSFiles{CAFile: "flag-ca.pem", CertFile: "s.pem", KeyFile: "s-key.pem"}) {
		t.Errorf("hub tls: %+v", cfg.HubTLS)
	}
	if _, _, err := parse([]string{"--auth", auth, "--hub-tls-ca", "ca.pem"}, io.Discard); err == nil || !strings.Contains(err.Error(), "--hub") {
		t.Errorf("--hub-tls-ca without a hub: got %v", err)
	}
	if _, _, err := parse([]string{"--auth", auth, "--config", writeFile(t, `{"tls":{"crt":"x"}}`)}, io.Discard); err == nil || !strings.Contains(err.Error(), `unknown field "crt"`) {
		t.Errorf("misspelt tls field: got %v", err)
	}
}

// TestRunRefusesOpenCluster: cc-broker with a cluster listener on every
// interface and no route authentication does not start, and says what
// to add.
func TestRunRefusesOpenCluster(t *testing.T) {
	err := run(context.Background(), []string{"--auth", authFile(t), "--listen", "127.0.0.1:0", "--cluster-listen", "0.0.0.0:0"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--cluster-secret-file") || !strings.Contains(err.Error(), "cc-broker cluster-secret") {
		t.Fatalf("got %v, want a refusal naming --cluster-secret-file", err)
	}
	err = run(context.Background(), []string{"--auth", authFile(t), "--listen", "127.0.0.1:0", "--leaf-listen", "0.0.0.0:0",
		"--config", writeFile(t, `{"leaf_sites":[{"site":"dc2","password_bcrypt":"$2a$04$e6nB5rC0u6Vf4IuqJd7Iy.Uv5tN0k2QmD2wKQxR7i5jv3E0Fq9kXK"}]}`)}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--allow-plaintext-leaf") {
		t.Fatalf("got %v, want a refusal of a plain-text leaf listener", err)
	}
}
