// Package termsafe makes text from the network safe to print on a
// terminal. A machine's labels, a refused client's connection name, an
// agent's reply: whoever wrote them could put escape sequences in them
// that clear the screen, retitle the window, hide the text that follows,
// or reorder a line (Unicode bidi overrides) when printed raw. Every
// human-readable output of the tools passes what it prints through
// [String] (one value, one line) or [Text] (a message that may span
// lines). JSON output does not: it stays exact.
package termsafe

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// String returns s with every character a terminal would act on, rather
// than show, replaced by a visible escape:
//
//   - C0 controls (U+0000–U+001F, tab, newline and carriage return
//     included) and DEL: \t \n \r, or \xHH;
//   - C1 controls (U+0080–U+009F): \u0080…;
//   - the Unicode bidirectional controls that reorder a line (U+061C,
//     U+200E, U+200F, U+202A–U+202E, U+2066–U+2069) and the line and
//     paragraph separators (U+2028, U+2029): \u202e…;
//   - bytes that are not UTF-8 (a lone 0x9B is CSI to an 8-bit terminal):
//     \xHH.
//
// Everything else, backslashes included, is unchanged, and a string that
// needs no escape is returned as it is.
func String(s string) string { return escape(s, false) }

// Text is [String] for a message of several lines: it keeps newlines and
// tabs, and escapes everything else String does.
func Text(s string) string { return escape(s, true) }

func escape(s string, keepLines bool) string {
	i := firstUnsafe(s, keepLines)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x`)
			b.WriteString(hex2(s[i]))
		case !needsEscape(r, keepLines):
			b.WriteString(s[i : i+n])
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x80:
			b.WriteString(`\x`)
			b.WriteString(hex2(byte(r)))
		default:
			b.WriteString(`\u`)
			h := strconv.FormatInt(int64(r), 16)
			b.WriteString(strings.Repeat("0", 4-len(h)) + h)
		}
		i += n
	}
	return b.String()
}

// firstUnsafe returns the index of the first byte of s that needs an
// escape, or -1.
func firstUnsafe(s string, keepLines bool) int {
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f {
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n == 1) || needsEscape(r, keepLines) {
			return i
		}
		i += n
	}
	return -1
}

// needsEscape reports whether r is a character String escapes.
func needsEscape(r rune, keepLines bool) bool {
	switch {
	case r == '\n' || r == '\t':
		return !keepLines
	case r < 0x20, r == 0x7f:
		return true
	case r >= 0x80 && r <= 0x9f:
		return true
	}
	return isBidiOrSeparator(r)
}

func isBidiOrSeparator(r rune) bool {
	switch {
	case r == 0x061c, r == 0x200e, r == 0x200f:
		return true
	case r >= 0x2028 && r <= 0x202e: // separators, then LRE RLE PDF LRO RLO
		return true
	case r >= 0x2066 && r <= 0x2069: // LRI RLI FSI PDI
		return true
	}
	return false
}

func hex2(c byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[c>>4], digits[c&0xf]})
}

// Safe reports whether s holds nothing [String] would escape.
func Safe(s string) bool { return firstUnsafe(s, false) < 0 }

// SafeText reports whether s holds nothing [Text] would escape: output
// of several lines that a terminal shows as it is.
func SafeText(s string) bool { return firstUnsafe(s, true) < 0 }
