package main

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

func TestPprofListenLoopbackOnly(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:6060", ":6060", "6060"} {
		if _, _, err := servePprof(addr, log); err == nil || !strings.Contains(err.Error(), "--pprof-listen") {
			t.Errorf("servePprof(%q) = %v, want an error naming --pprof-listen", addr, err)
		}
	}
}

func TestPprofListenServesProfiler(t *testing.T) {
	url, stop, err := servePprof("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get(url + "goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "goroutine profile") {
		t.Fatalf("GET %sgoroutine: %d %.200s", url, resp.StatusCode, b)
	}
}
