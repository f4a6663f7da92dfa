package main

import (
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
)

// TestQuickStartTLS: cc-control with --tls-cert/--tls-key/--tls-ca serves
// its embedded broker over TLS only; the control service and the local
// agent run in the same process and need no certificate; an operator who
// trusts the CA lists and calls the local agent; a client that does not
// trust it is refused.
func TestQuickStartTLS(t *testing.T) {
	certs := stacktest.TLSFiles(t)
	data := t.TempDir()
	p := startProgram(t, "--data", data, "--listen", "127.0.0.1:0", "--local-agent", "--local-agent-id", "127.0.0.1_tls",
		"--tls-cert", certs.Cert, "--tls-key", certs.Key, "--tls-ca", certs.CA)
	out := p.stdout.String()
	url := regexp.MustCompile(`broker:\s+(tls://\S+)`).FindStringSubmatch(out)
	if url == nil {
		t.Fatalf("no tls:// broker URL in:\n%s", out)
	}
	if !strings.Contains(out, "--tls-ca "+certs.CA) {
		t.Errorf("welcome does not say how an agent trusts the broker:\n%s", out)
	}
	if nc, err := nats.Connect(url[1], nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("a client that does not trust the CA connected")
	}
	c, err := bench.Connect(url[1], bench.WithSeedFile(data+"/admin.nk"), bench.WithNATSOptions(nats.RootCAs(certs.CA)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitServers(t, c, "127.0.0.1_tls")
	res, err := c.Call(context.Background(), "current-load", nil, bench.CallOptions{Timeout: 10 * time.Second})
	if err != nil || !res.AllOK() {
		t.Fatalf("call over TLS: %v %+v", err, res)
	}
	p.stop(t)
}

// TestRefusesOpenClusterListen: the embedded broker follows the same rule
// as cc-broker: a cluster listener on every interface without route
// authentication stops cc-control at start, naming what to add.
func TestRefusesOpenClusterListen(t *testing.T) {
	err := run(context.Background(), []string{"--data", t.TempDir(), "--listen", "127.0.0.1:0", "--cluster-listen", "0.0.0.0:0", "--no-durable-audit"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--cluster-secret-file") {
		t.Fatalf("got %v, want a refusal naming --cluster-secret-file", err)
	}
}
