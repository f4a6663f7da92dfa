package controlsvc

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/commandcontrol/commandcontrol/fleet"
)

func TestBoundClientText(t *testing.T) {
	exact := strings.Repeat("a", fleet.AuditMaxClientText)
	long := strings.Repeat("é", 1000) // 2000 bytes, two per character
	for _, tc := range []struct{ in, wantPrefix, wantMark string }{
		{"", "", ""},
		{"\x1b[2J\x1b[H\x1b[32mall machines OK", "\x1b[2J\x1b[H\x1b[32mall machines OK", ""},
		{exact, exact, ""},
		{exact + "b", strings.Repeat("a", 114), "…(129 bytes)"},
		{long, strings.Repeat("é", 56), "…(2000 bytes)"},
	} {
		got := boundClientText(tc.in)
		if len(got) > fleet.AuditMaxClientText {
			t.Errorf("boundClientText(%.20q…) is %d bytes, over %d", tc.in, len(got), fleet.AuditMaxClientText)
		}
		if got != tc.wantPrefix+tc.wantMark {
			t.Errorf("boundClientText(%.20q…) = %q, want %q", tc.in, got, tc.wantPrefix+tc.wantMark)
		}
		if utf8.ValidString(tc.in) && !utf8.ValidString(got) {
			t.Errorf("boundClientText(%.20q…) cut a character: %q", tc.in, got)
		}
	}
}

// TestRefusedNameAndKeyBounded: a client that is refused may make its
// connection name and the key it presents as long as the broker lets it
// (kilobytes); what the callout logs, counts and audits of them is at
// most fleet.AuditMaxClientText bytes each, escapes kept as they are.
func TestRefusedNameAndKeyBounded(t *testing.T) {
	f := newCalloutFixture(t)
	var audited []string
	f.c.onAudit = func(_, who, key, _, _, reason string) { audited = append(audited, who, key, reason) }
	evil := "\x1b]0;owned\a\x1b[8m" + strings.Repeat("x", 4000)
	// A key that is no nkey at all: refused before any signature check.
	if _, err := f.c.decide(rawRequest(t, evil, evil, testNonce, "c2ln")); err == nil {
		t.Fatal("a connection with a made-up key was admitted")
	}
	// A real key, an unregistered machine id too long to be one.
	kp, _ := newUser(t)
	if _, err := f.c.decide(request(t, kp, evil)); err == nil {
		t.Fatal("a connection named with 4 KB of escapes was admitted")
	}
	if len(audited) != 6 || len(f.refused) != 2 {
		t.Fatalf("audited %d strings, refused %d; want 6 and 2", len(audited), len(f.refused))
	}
	for i, s := range append(audited[:2:2], audited[3], f.refused[0].who, f.refused[1].who) {
		if len(s) > fleet.AuditMaxClientText || !strings.HasPrefix(s, "\x1b]0;owned\a\x1b[8mxxx") || !strings.HasSuffix(s, "…(4014 bytes)") {
			t.Errorf("kept text %d: %q (%d bytes), want the first bytes exactly and a mark, at most %d bytes", i, s, len(s), fleet.AuditMaxClientText)
		}
	}
	for _, reason := range []string{audited[2], audited[5]} {
		if len(reason) > 512 {
			t.Errorf("reason is %d bytes: %.80q…", len(reason), reason)
		}
	}
}
