package main

import (
	"log/slog"
	"net/http"
	"testing"
)

// TestReview17PprofRefusesForeignHost: the profiler listens on loopback,
// but answers any Host header. A web page the operator opens on that
// machine can rebind its own name to 127.0.0.1 (DNS rebinding) and read
// /debug/pprof/ (goroutine stacks, the command line) or start CPU
// profiles and traces, since the browser sends its own name as Host.
// Only loopback names (127.0.0.1, [::1], localhost) should be answered.
func TestReview17PprofRefusesForeignHost(t *testing.T) {
	url, stop, err := servePprof("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	req, err := http.NewRequest(http.MethodGet, url+"cmdline", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "rebind.attacker.example:6060"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatalf("GET %scmdline with Host %s: %d, want it refused (403 or 421)", url, req.Host, resp.StatusCode)
	}
}
