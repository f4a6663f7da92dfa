package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestExternalBrokerTLS: cc-control --broker tls://… --broker-tls-ca
// reaches a TLS-only broker, serves, and its --local-agent joins through
// the same TLS; an operator verifying the broker calls it. With the wrong
// CA it does not start and says which CA failed.
func TestExternalBrokerTLS(t *testing.T) {
	data := t.TempDir()
	ca, cert, key, _, _ := stacktest.TLSFiles(t).Files()
	other, _, _, _, _ := stacktest.TLSFiles(t).Files()
	url := stacktest.StartTLSBroker(t, data, cert, key, "")

	err := run(t.Context(), []string{"--data", data, "--broker", url, "--broker-tls-ca", other, "--no-durable-audit"}, &stacktest.Buffer{}, &stacktest.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "not signed by the CA in "+other+": check that --broker-tls-ca FILE names the CA") {
		t.Fatalf("wrong CA: err = %v", err)
	}

	var stdout, stderr stacktest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--data", data, "--broker", url, "--broker-tls-ca", ca, "--no-durable-audit",
			"--local-agent", "--local-agent-id", "127.0.0.1_tlslocal"}, &stdout, &stderr)
	}()
	deadline := time.Now().Add(stacktest.WaitTimeout)
	for !strings.Contains(stdout.String(), "Query the fleet") {
		if time.Now().After(deadline) {
			t.Fatalf("no welcome; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := bench.Connect(url, bench.WithSeedFile(filepath.Join(data, "admin.nk")), bench.WithTLSCA(ca))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for {
		res, err := c.Call(context.Background(), "machine-info", nil, bench.CallOptions{Machines: []string{"127.0.0.1_tlslocal"}, Timeout: time.Second})
		if err == nil && res.AllOK() && len(res.Replied) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the local agent does not answer over TLS: %v %+v\n%s", err, res, stderr.String())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestExternalBrokerPlaintextRefused: plain text to an external broker
// off this host is refused before dialling, naming the URL and the flags
// that fix it; the TLS flags without --broker are a mistake said so.
func TestExternalBrokerPlaintextRefused(t *testing.T) {
	err := run(t.Context(), []string{"--data", t.TempDir(), "--broker", "nats://127.0.0.1:4222,nats://10.0.0.5:4222"}, &stacktest.Buffer{}, &stacktest.Buffer{})
	for _, want := range []string{"refusing to connect to nats://10.0.0.5:4222 in plain text", "--broker-tls-ca FILE", "--broker-allow-plaintext"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v; want %q", err, want)
		}
	}
	err = run(t.Context(), []string{"--data", t.TempDir(), "--broker-tls-ca", "ca.pem"}, &stacktest.Buffer{}, &stacktest.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "are for an external --broker") {
		t.Errorf("--broker-tls-ca without --broker: err = %v", err)
	}
}
