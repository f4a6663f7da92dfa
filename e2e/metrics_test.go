package e2e

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// TestMetrics scrapes the control service's /metrics over 127.0.0.1 after
// real traffic: a granted and a refused agent, an operator, a call that
// succeeds and one that fails, and checks every family the issue names.
func TestMetrics(t *testing.T) {
	svc := stacktest.StartControlWith(t, controlsvc.Config{
		DataDir: t.TempDir(),
		Broker:  broker.Config{Listen: "127.0.0.1:0"},
		Logger:  stacktest.Logger(),
	})
	web := httptest.NewServer(svc.HTTPHandler())
	defer web.Close()

	startAgent(t, svc, "10.0.0.5_web01", true)
	stacktest.WaitFor(t, "web01 ONLINE", 5*time.Second, func() bool { return stacktest.Online(svc, "10.0.0.5_web01") })
	startAgent(t, svc, "10.0.0.9_stranger", false) // refused, pending
	stacktest.WaitFor(t, "stranger pending", 5*time.Second, func() bool { return len(svc.Registry().Pending()) == 1 })

	nc := operatorConn(t, svc.ClientURL(), newOperator(t, svc, "ops", "admin"))
	if _, err := stacktest.Request(nc, "10.0.0.5_web01", "current-load", nil, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	m, err := stacktest.Request(nc, "10.0.0.5_web01", "nope", nil, 5*time.Second)
	if err != nil || m.Header.Get(fleet.HeaderErrorCode) != "404" {
		t.Fatalf("call nope: %v %v", err, m)
	}
	// A registered machine that is not connected: no response.
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	if _, err := svc.Registry().AddMachine("10.0.0.6_web02", pub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	if _, err := stacktest.Request(nc, "10.0.0.6_web02", "current-load", nil, 5*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("call to an offline machine: got %v, want no responders", err)
	}

	want := []string{
		"cc_machines_online 1",
		"cc_machines_pending 1",
		"cc_machines_registered 2",
		`cc_authorisations_total{kind="agent",result="granted"} 1`,
		`cc_authorisations_total{kind="agent",result="refused"}`,
		`cc_authorisations_total{kind="operator",result="granted"} 1`,
		`cc_calls_total{function="current-load",outcome="ok"} 1`,
		`cc_calls_total{function="nope",outcome="404"} 1`,
		`cc_calls_total{function="current-load",outcome="no_response"} 1`,
		`cc_call_duration_seconds_count{function="current-load"} 1`,
		`cc_call_duration_seconds_bucket{function="current-load",le="+Inf"} 1`,
		"cc_broker_connected 1",
		"go_goroutines",
	}
	var body string
	deadline := time.Now().Add(5 * time.Second)
	for {
		body = get(t, web.URL+"/metrics", http.StatusOK)
		missing := ""
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack %q:\n%s", missing, grepPrefix(body, "cc_"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := get(t, web.URL+"/healthz", http.StatusOK); strings.TrimSpace(got) != "ok" {
		t.Errorf("healthz = %q, want ok", got)
	}
	svc.Close() // again when the test ends: a no-op
	if got := get(t, web.URL+"/healthz", http.StatusServiceUnavailable); !strings.Contains(got, "not connected") {
		t.Errorf("healthz after Close = %q, want not connected", got)
	}
}

// TestMetricsFunctionLabelsBounded: an operator calling made-up function
// names cannot grow the label set without bound.
func TestMetricsFunctionLabelsBounded(t *testing.T) {
	svc := stacktest.StartControlWith(t, controlsvc.Config{DataDir: t.TempDir(), Broker: broker.Config{Listen: "127.0.0.1:0"}})
	web := httptest.NewServer(svc.HTTPHandler())
	defer web.Close()
	startAgent(t, svc, "10.0.0.5_web01", true)
	stacktest.WaitFor(t, "web01 ONLINE", 5*time.Second, func() bool { return stacktest.Online(svc, "10.0.0.5_web01") })
	nc := operatorConn(t, svc.ClientURL(), newOperator(t, svc, "ops", "admin"))
	const n = 80
	for i := range n {
		if _, err := stacktest.Request(nc, "10.0.0.5_web01", fmt.Sprintf("made-up-%d", i), nil, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	stacktest.WaitFor(t, "other label", 5*time.Second, func() bool {
		return strings.Contains(get(t, web.URL+"/metrics", http.StatusOK), `cc_calls_total{function="other",outcome="404"}`)
	})
	if got := strings.Count(grepPrefix(get(t, web.URL+"/metrics", http.StatusOK), "cc_calls_total{"), "\n"); got > 65 {
		t.Errorf("%d cc_calls_total series, want at most 65", got)
	}
}

func get(t *testing.T, url string, wantCode int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantCode {
		t.Fatalf("GET %s: %d, want %d: %s", url, resp.StatusCode, wantCode, b)
	}
	return string(b)
}

func grepPrefix(s, prefix string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
