package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestAgentHint: the welcome's agent command is one that works: on a
// loopback-only broker, this machine's (and how to open the port to
// others); on all interfaces, <this host>; on one address, that address.
func TestAgentHint(t *testing.T) {
	var b strings.Builder
	for _, c := range []struct {
		url      string
		embedded bool
		tls      broker.TLSFiles
	}{
		{"nats://127.0.0.1:4222", true, broker.TLSFiles{}},
		{"nats://127.0.0.1:5222", false, broker.TLSFiles{}},
		{"tls://127.0.0.1:4222", true, broker.TLSFiles{CertFile: "cert.pem", KeyFile: "key.pem"}},
		{"nats://0.0.0.0:4222", true, broker.TLSFiles{}},
		{"tls://[::]:4443", true, broker.TLSFiles{CAFile: "ca.pem", CertFile: "cert.pem", KeyFile: "key.pem"}},
		{"nats://10.1.2.3:4222", true, broker.TLSFiles{}},
		{"nats://[fd00::5]:4222", true, broker.TLSFiles{}},
		{"tls://broker.example.com:4222", false, broker.TLSFiles{}},
	} {
		b.WriteString("# " + c.url + " embedded=" + strconv.FormatBool(c.embedded) + "\n")
		agentHint(&b, c.url, c.embedded, c.tls)
	}
	golden(t, "agent_hint", b.String())
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", name, path, got, want)
	}
}

// freePort returns a 127.0.0.1 port nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// TestClientRightAfterStart: cc-control opens its client port only once
// it answers. An operator that connects the moment the port opens is
// admitted and served (no "the broker refused this key", no "no control
// service answered"); before that, /healthz says alive and starting,
// /readyz 503, and once the port is open /readyz is 200.
func TestClientRightAfterStart(t *testing.T) {
	data := t.TempDir()
	port, mport := freePort(t), freePort(t)
	url := "nats://127.0.0.1:" + port
	web := "http://127.0.0.1:" + mport
	p := &program{done: make(chan error, 1)}
	ctx, cancel := testContext(t)
	p.cancel = cancel
	go func() {
		p.done <- run(ctx, []string{"--data", data, "--listen", "127.0.0.1:" + port, "--metrics-listen", "127.0.0.1:" + mport}, &p.stdout, &p.stderr)
	}()

	// Whatever /healthz, /readyz and the client port say while it
	// starts, they must agree: no open port before ready.
	sawStarting := false
	var c *bench.Client
	for c == nil {
		select {
		case err := <-p.done:
			t.Fatalf("cc-control stopped: %v\n%s", err, p.stderr.String())
		case <-ctx.Done():
			t.Fatalf("no client admitted in time; stderr:\n%s", p.stderr.String())
		default:
		}
		code, body := httpGet(web + "/healthz")
		if code == http.StatusOK && body == "starting" {
			sawStarting = true
			if code, body := httpGet(web + "/readyz"); code != http.StatusServiceUnavailable && code != http.StatusOK && code != 0 {
				t.Fatalf("/readyz while starting: %d %q", code, body)
			}
		}
		cl, err := bench.Connect(url, bench.WithSeedFile(filepath.Join(data, "admin.nk")), bench.WithConnectTimeout(10*time.Second))
		switch {
		case err == nil:
			c = cl
		case errors.Is(err, bench.ErrUnreachable), errors.Is(err, os.ErrNotExist):
			time.Sleep(time.Millisecond) // the port is not open yet: try again
		default:
			t.Fatalf("the first connection after the port opened: %v", err)
		}
	}
	defer c.Close()
	if _, err := c.Snapshot(ctx); err != nil {
		t.Fatalf("the first operator, right after the port opened: %v", err)
	}
	if code, body := httpGet(web + "/readyz"); code != http.StatusOK || body != "ready" {
		t.Errorf("/readyz once serving: %d %q", code, body)
	}
	if code, body := httpGet(web + "/healthz"); code != http.StatusOK || body != "ok" {
		t.Errorf("/healthz once serving: %d %q", code, body)
	}
	t.Logf("saw /healthz starting before the port opened: %v", sawStarting)
	p.stop(t)
}

// httpGet returns the status and trimmed body of url, or 0 when nothing
// answers.
func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func testContext(t *testing.T) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx, cancel
}

// TestHealthBeforeReady: /healthz (alive) answers 200 "starting" before
// Start, /readyz 503 and /metrics 503 until Start has returned; then 200
// "ok", "ready" and the metrics; after Close, 503 for both.
func TestHealthBeforeReady(t *testing.T) {
	svc, err := controlsvc.New(controlsvc.Config{DataDir: t.TempDir(), Broker: broker.Config{Listen: "127.0.0.1:0"}, Audit: controlsvc.AuditConfig{NotDurable: true}})
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(svc.HTTPHandler())
	defer web.Close()
	for path, want := range map[string]struct {
		code int
		body string
	}{
		"/healthz": {http.StatusOK, "starting"},
		"/readyz":  {http.StatusServiceUnavailable, "starting: the callout, presence and the control API are not all answering yet"},
		"/metrics": {http.StatusServiceUnavailable, "starting"},
	} {
		if code, body := httpGet(web.URL + path); code != want.code || body != want.body {
			t.Errorf("%s before Start: %d %q, want %d %q", path, code, body, want.code, want.body)
		}
	}
	if svc.Ready() {
		t.Error("Ready before Start")
	}
	ctx, _ := testContext(t)
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if !svc.Ready() || !svc.Broker().Listening() {
		t.Errorf("after Start: ready %v, listening %v", svc.Ready(), svc.Broker().Listening())
	}
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready"} {
		if code, body := httpGet(web.URL + path); code != http.StatusOK || body != want {
			t.Errorf("%s after Start: %d %q, want 200 %q", path, code, body, want)
		}
	}
	if code, body := httpGet(web.URL + "/metrics"); code != http.StatusOK || !strings.Contains(body, "cc_machines_online") {
		t.Errorf("/metrics after Start: %d", code)
	}
	svc.Close()
	if code, body := httpGet(web.URL + "/readyz"); code != http.StatusServiceUnavailable || body != "stopped" {
		t.Errorf("/readyz after Close: %d %q", code, body)
	}
	if code, body := httpGet(web.URL + "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not connected") {
		t.Errorf("/healthz after Close: %d %q", code, body)
	}
}
