package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/commandcontrol/commandcontrol/internal/termsafe"
)

// What an attacker would send to an admin's terminal: clear the screen,
// fake a status line; retitle the window and hide what follows; a C1
// CSI; a right-to-left override that reorders the rest of the line.
const (
	escClear  = "\x1b[2J\x1b[H\x1b[32mall machines OK"
	escTitle  = "\x1b]0;owned\a\x1b[8m"
	escReload = "x\u009b2J\u202etxt.exe"
)

// checkTerminalSafe fails when out holds a byte or character a terminal
// would act on (anything termsafe escapes, newlines and tabs apart).
func checkTerminalSafe(t *testing.T, what, out string) {
	t.Helper()
	if !termsafe.SafeText(out) {
		t.Errorf("%s printed raw control characters:\n%q", what, out)
	}
}

// TestEscapeRefusedClientInAudit: a client that is never authenticated
// names its connection with terminal escapes and presents escapes as its
// key. `cc-bench audit` shows both escaped, visibly (\x1b[2J…); --json
// keeps them exactly as sent. A name kilobytes long is kept bounded.
func TestEscapeRefusedClientInAudit(t *testing.T) {
	f := startFleet(t)
	kp := stacktest.Key(t, "intruder")
	if nc, err := stacktest.Dial(f.url, kp, escClear); err == nil {
		nc.Close()
		t.Fatal("a client named with escapes was admitted")
	}
	// A made-up key: nats.Nkey sends whatever it is given.
	if nc, err := nats.Connect(f.url, nats.Name("10.6.6.6_intruder"), nats.Nkey(escTitle, kp.Sign),
		nats.Timeout(5*time.Second), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("a client presenting escapes as its key was admitted")
	}
	long := escReload + strings.Repeat("y", 3000)
	if nc, err := stacktest.Dial(f.url, kp, long); err == nil {
		nc.Close()
		t.Fatal("a client with a 3 KB name was admitted")
	}

	var recs []fleet.AuditRecord
	pollUntil(t, "the three refusals in the audit", func() bool {
		stdout, _, code := cc(t, f.env(), "audit", "--since", "0", "--log", "refused", "--json")
		recs = recs[:0]
		for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
			var r fleet.AuditRecord
			if code == exitOK && json.Unmarshal([]byte(line), &r) == nil {
				recs = append(recs, r)
			}
		}
		return len(recs) >= 3
	})
	var sawName, sawKey, sawLong bool
	for _, r := range recs {
		switch {
		case r.Name == escClear:
			sawName = true
		case r.Key == escTitle:
			sawKey = true
		case strings.HasPrefix(long, strings.TrimSuffix(r.Name, fmt.Sprintf("…(%d bytes)", len(long)))) && len(r.Name) <= fleet.AuditMaxClientText:
			sawLong = true
		}
	}
	if !sawName || !sawKey || !sawLong {
		t.Errorf("--json: escape-laden name kept exactly %v, key %v, long name bounded %v; records %s", sawName, sawKey, sawLong, termsafe.String(fmt.Sprintf("%+v", recs)))
	}

	stdout, stderr, code := cc(t, f.env(), "audit", "--since", "0", "--log", "refused")
	if code != exitOK {
		t.Fatalf("audit: exit %d: %s", code, stderr)
	}
	checkTerminalSafe(t, "cc-bench audit", stdout+stderr)
	for _, want := range []string{`\x1b[2J\x1b[H\x1b[32mall machines OK`, `\x1b]0;owned\x07\x1b[8m`, `x\u009b2J\u202etxt.exe`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("audit table lacks the escaped %s:\n%s", want, stdout)
		}
	}
}

// TestEscapeLabelsAndReplies: label values may hold anything (up to 256
// bytes), and replies and error descriptions are whatever an agent sent.
// machines ls, servers, watch and call show them escaped; --json exactly.
func TestEscapeLabelsAndReplies(t *testing.T) {
	f := startFleet(t)
	labels := map[string]string{"note": escClear, "owner": escTitle}
	f.agent("10.0.0.1_web01", labels,
		stacktest.Result("motd", map[string]any{"text": escReload}),
		stacktest.Fail("broken", fleet.CodeInternal, escTitle+"\nFAKE LINE"))

	stdout, stderr, code := cc(t, f.env(), "machines", "ls")
	if code != exitOK {
		t.Fatalf("machines ls: exit %d: %s", code, stderr)
	}
	checkTerminalSafe(t, "machines ls", stdout+stderr)
	if !strings.Contains(stdout, `note=\x1b[2J\x1b[H\x1b[32mall machines OK,owner=\x1b]0;owned\x07\x1b[8m`) {
		t.Errorf("machines ls lacks the escaped labels:\n%s", stdout)
	}
	stdout, _, _ = cc(t, f.env(), "machines", "ls", "--json")
	if objs := jsonObjects(t, stdout); len(objs) != 1 || objs[0]["labels"].(map[string]any)["note"] != escClear {
		t.Errorf("machines ls --json does not keep the label exactly: %v", objs)
	}

	stdout, stderr, _ = cc(t, f.env(), "servers")
	checkTerminalSafe(t, "servers", stdout+stderr)

	stdout, stderr, _ = cc(t, f.env(), "call", "motd")
	checkTerminalSafe(t, "call motd", stdout+stderr)
	if !strings.Contains(stdout, `x\u009b2J\u202etxt.exe`) {
		t.Errorf("call lacks the escaped reply:\n%s", stdout)
	}
	stdout, stderr, _ = cc(t, f.env(), "call", "motd", "--json")
	var line callLine
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &line); err != nil || !strings.Contains(string(line.Result), "\u202e") {
		t.Errorf("call --json does not keep the reply exactly: %q %v (%s)", stdout, err, stderr)
	}
	stdout, stderr, _ = cc(t, f.env(), "call", "broken")
	checkTerminalSafe(t, "call broken", stdout+stderr)
	if strings.Contains(stdout, "\nFAKE LINE") {
		t.Errorf("an error description added a line of its own:\n%s", stdout)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out stacktest.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _, _ = ccCtx(ctx, t, f.env(), &out, "watch")
	}()
	waitFor(t, &out, "watching for changes")
	cancel()
	<-done
	checkTerminalSafe(t, "watch", out.String())
	if !strings.Contains(out.String(), `\x1b[2J`) {
		t.Errorf("watch lacks the escaped label:\n%s", out.String())
	}
}

// pollUntil polls cond until it holds, for at most 10 seconds.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	const d = 10 * time.Second
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
