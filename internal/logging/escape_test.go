package logging

import (
	"bytes"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/internal/termsafe"
)

// TestTextLogEscapes: the daemons log what refused clients sent (the
// callout logs a refused connection's name); the text format, meant for
// a terminal, must show it escaped. slog's text handler quotes any value
// with a character that is not printable, with Go escapes, which covers
// C0, DEL, C1, bidi controls and bytes that are not UTF-8.
func TestTextLogEscapes(t *testing.T) {
	var buf bytes.Buffer
	f := Flags{Format: "text", Level: "info"}
	log, err := f.New(&buf)
	if err != nil {
		t.Fatal(err)
	}
	evil := []string{"\x1b[2J\x1b[H\x1b[32mall machines OK", "\x1b]0;owned\a\x1b[8m", "x\u009b2J\u202etxt.exe", "a\x9bb\xff", "new\nline"}
	for _, s := range evil {
		log.Warn("connection refused", "name", s, "reason", "bad name "+s)
	}
	out := buf.String()
	if !termsafe.SafeText(out) {
		t.Errorf("the text log holds raw control characters:\n%q", out)
	}
	if n := strings.Count(out, "\n"); n != len(evil) {
		t.Errorf("%d log lines for %d records:\n%s", n, len(evil), out)
	}
}
