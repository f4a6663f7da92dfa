package broker

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLogViolationsBounded: a client sending nothing but refused
// publishes does not turn each into a log line: at most violationBurst a
// window, then one line counting the rest; other errors always pass.
func TestLogViolationsBounded(t *testing.T) {
	var out strings.Builder
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a := newLogAdapter(slog.New(slog.NewTextHandler(&out, nil)), func() time.Time { return at })
	for range 1000 {
		a.Errorf("%s - Publish Violation - Subject %q", "cid:7", "$SRV.PING")
	}
	a.Errorf("something else went wrong")
	if n := strings.Count(out.String(), "Publish Violation"); n != violationBurst {
		t.Fatalf("%d violation lines logged in one window, want %d", n, violationBurst)
	}
	if !strings.Contains(out.String(), "something else went wrong") {
		t.Fatal("another error was not logged")
	}
	at = at.Add(violationWindow)
	a.Errorf("%s - Subscription Violation - Subject %q, SID %s", "cid:7", "x", "1")
	if !strings.Contains(out.String(), "count=980") {
		t.Fatalf("the 980 left out were not counted:\n%s", out.String())
	}
	if n := strings.Count(out.String(), "Violation - Subject"); n != violationBurst+1 {
		t.Fatalf("%d violation lines, want %d (a new window logs again)", n, violationBurst+1)
	}
}

// TestLogBannerAtDebug: the start-up banner nats-server v2.15 prints (the
// lines as it writes them) goes to debug; the lines saying what started
// and where it listens stay at info.
func TestLogBannerAtDebug(t *testing.T) {
	var out strings.Builder
	a := newLogAdapter(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	banner := []string{
		"  Version:  2.15.2", "  Git:      [not set]", "  Name:     NARYO53X", "  Node:     l955ardw", "  ID:       NARYO53X",
		"    _ ___ _____ ___ _____ ___ ___   _   __  __",
		" _ | | __|_   _/ __|_   _| _ \\ __| /_\\ |  \\/  |",
		"| || | _|  | | \\__ \\ | | |   / _| / _ \\| |\\/| |",
		" \\__/|___| |_| |___/ |_| |_|_\\___/_/ \\_\\_|  |_|",
		"", "         https://docs.nats.io/jetstream", "---------------- JETSTREAM ----------------",
		"  Strict:          true", "  Max Memory:      17.66 GB", "  Store Directory: \"/tmp/x\"", "  API Level:       5",
		"-------------------------------------------",
	}
	kept := []string{"Starting nats-server", "Starting JetStream", "Listening for client connections on 127.0.0.1:4222",
		"Server is ready", "  Restored 12 messages for stream '$G > audit' in 3ms"}
	for _, l := range append(banner, kept...) {
		a.Noticef("%s", l)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(banner)+len(kept) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(banner)+len(kept), out.String())
	}
	for i, line := range lines {
		want := "level=DEBUG"
		if i >= len(banner) {
			want = "level=INFO"
		}
		if !strings.Contains(line, want) {
			t.Errorf("line %d: %s, want %s", i, line, want)
		}
	}
}

// TestLogRefusalOnce: a connection the auth callout refused is the
// control service's line to log: the server's two lines about it go to
// debug. Refusals the callout never answered are counted, one warn line
// per window; a route's failed authentication stays an error.
func TestLogRefusalOnce(t *testing.T) {
	var out strings.Builder
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a := newLogAdapter(slog.New(slog.NewTextHandler(&out, nil)), func() time.Time { return at })
	// As nats-server writes them: the error from the client, the warning
	// from the server once the callout's answer is read.
	refused := func(cid int) {
		a.Errorf("%s - %s", fmt.Sprintf("127.0.0.1:4%04d - cid:%d", cid, cid), `authentication error - Nkey "UABC"`)
		a.Warnf("Auth callout service returned an error: machine x is not in the registry")
	}
	for cid := range 50 {
		refused(cid)
	}
	if out.Len() != 0 {
		t.Fatalf("refusals the callout explained were logged at info or above:\n%s", out.String())
	}
	// The callout does not answer three (no warning follows the error).
	for cid := range 3 {
		a.Errorf("%s - %s", fmt.Sprintf("127.0.0.1:5%04d - cid:%d", cid, 100+cid), `authentication error - Nkey "UABC"`)
	}
	refused(200)
	if out.Len() != 0 {
		t.Fatalf("logged before the window ended:\n%s", out.String())
	}
	at = at.Add(violationWindow)
	refused(201)
	if got := out.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "without an answer from the auth callout") || !strings.Contains(got, "count=3") {
		t.Fatalf("want one line counting 3 unanswered, got:\n%s", got)
	}
	out.Reset()
	a.Errorf("%s - %s", "127.0.0.1:6222 - rid:9", "authentication error")
	if !strings.Contains(out.String(), "level=ERROR") {
		t.Errorf("a route's failed authentication is not an error: %q", out.String())
	}
	out.Reset()
	a.Warnf("Auth callout service returned an error: unbalanced")
	a.Warnf("something else")
	if got := out.String(); !strings.Contains(got, "level=WARN") || strings.Contains(got, "unbalanced") {
		t.Errorf("got %q, want only the other warning", got)
	}
}
