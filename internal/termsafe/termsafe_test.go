package termsafe

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"10.0.0.5_web01", "10.0.0.5_web01"},
		{"location=New-Jersey, ünïcødé ✓ 東京", "location=New-Jersey, ünïcødé ✓ 東京"},
		{`C:\path\file`, `C:\path\file`},
		// The finding's examples: clear screen, home, colour; window title, hidden text.
		{"\x1b[2J\x1b[H\x1b[32mall machines OK", `\x1b[2J\x1b[H\x1b[32mall machines OK`},
		{"\x1b]0;owned\a\x1b[8m", `\x1b]0;owned\x07\x1b[8m`},
		{"a\tb\nc\rd\x00e\x7f", `a\tb\nc\rd\x00e\x7f`},
		// C1 controls as characters: CSI, OSC, NEL.
		{"x\u009b2Jy\u009d0;t\u0085z", `x\u009b2Jy\u009d0;t\u0085z`},
		// Bidi overrides and isolates reorder what follows; marks and separators.
		{"admin\u202etxt.exe", `admin\u202etxt.exe`},
		{"\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069", `\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069`},
		{"\u200e\u200f\u061c\u2028\u2029", `\u200e\u200f\u061c\u2028\u2029`},
		// Bytes that are not UTF-8: a lone C1 byte, a cut sequence, 0xff.
		{"a\x9b2Jb", `a\x9b2Jb`},
		{"\xe2\x80", `\xe2\x80`},
		{"\xff\xfe ok", `\xff\xfe ok`},
		// U+FFFD written properly is a character like any other.
		{"\uFFFD", "\uFFFD"},
	} {
		got := String(tc.in)
		if got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if !Safe(got) {
			t.Errorf("String(%q) = %q still holds a character a terminal acts on", tc.in, got)
		}
	}
}

func TestText(t *testing.T) {
	in := "line one\n\tline two \x1b[31mred\x1b[0m \u202eevil\r"
	want := "line one\n\tline two \\x1b[31mred\\x1b[0m \\u202eevil\\r"
	if got := Text(in); got != want {
		t.Errorf("Text(%q) = %q, want %q", in, got, want)
	}
}

// TestStringUnchangedIsNotCopied: the common case (nothing to escape)
// costs a scan, not an allocation.
func TestStringUnchangedIsNotCopied(t *testing.T) {
	s := strings.Repeat("10.0.0.5_web01 role=web ", 8)
	if n := testing.AllocsPerRun(100, func() { _ = String(s) }); n != 0 {
		t.Errorf("String of a safe string allocated %v times", n)
	}
}

// FuzzString: whatever the input, the output is valid UTF-8 with no
// character a terminal acts on, and a safe input comes back unchanged.
func FuzzString(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b[2J", "\u202e", "\xff", "\u009b", "a\nb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := String(s)
		if !utf8.ValidString(got) || !Safe(got) {
			t.Fatalf("String(%q) = %q", s, got)
		}
		if Safe(s) && got != s {
			t.Fatalf("String(%q) changed a safe string to %q", s, got)
		}
		if txt := Text(s); !utf8.ValidString(txt) || !SafeText(txt) {
			t.Fatalf("Text(%q) = %q", s, txt)
		}
	})
}
