package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestPlaintextOffHostRefused: cc-agent refuses plain text to a broker off
// this host before it dials, saying which flag to add; --print-key still
// works with such a --server (it dials nothing), and half a client
// certificate is named.
func TestPlaintextOffHostRefused(t *testing.T) {
	key := filepath.Join(t.TempDir(), "agent.nk")
	err := run(context.Background(), []string{"--server", "nats://10.0.0.5:4222", "--key", key, "--id", "10.0.0.9_web"}, &bytes.Buffer{}, &bytes.Buffer{})
	for _, want := range []string{"refusing to connect to nats://10.0.0.5:4222 in plain text", "--tls-ca FILE", "--allow-plaintext"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v; want %q", err, want)
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--server", "nats://10.0.0.5:4222", "--tls-ca", "/not/yet/ca.pem", "--key", key, "--id", "10.0.0.9_web", "--print-key"}, &out, &bytes.Buffer{}); err != nil || !strings.Contains(out.String(), "key:     U") {
		t.Errorf("--print-key: %v, %q", err, out.String())
	}
	err = run(context.Background(), []string{"--server", "tls://10.0.0.5:4222", "--tls-key", "k.pem", "--key", key, "--id", "10.0.0.9_web"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "needs both its certificate file and its key file") {
		t.Errorf("--tls-key alone: err = %v", err)
	}
}
