package cli

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A small YAML emitter for JSON values (--output yaml), in block style,
// keys in the order they came. Strings are plain only when no YAML
// reader could take them for anything else (a number, a boolean, null, a
// date, an indicator), otherwise double-quoted with every character that
// is not printable escaped — which also keeps what an agent sent from
// acting on a terminal, while a YAML reader still gets it back exactly.

// yamlItem appends v as one item of a top-level sequence: "- …".
func yamlItem(b *strings.Builder, v any) {
	b.WriteString("-")
	yamlValue(b, v, 2, true)
}

// yamlValue writes v after "key:" or "-" (afterDash), its further lines
// indented by indent.
func yamlValue(b *strings.Builder, v any, indent int, afterDash bool) {
	switch t := v.(type) {
	case jsonObject:
		if len(t) == 0 {
			b.WriteString(" {}\n")
			return
		}
		if afterDash {
			b.WriteByte(' ')
		} else {
			b.WriteByte('\n')
		}
		for i, m := range t {
			if i > 0 || !afterDash {
				b.WriteString(strings.Repeat(" ", indent))
			}
			b.WriteString(yamlString(m.key))
			b.WriteByte(':')
			yamlValue(b, m.value, indent+2, false)
		}
	case []any:
		if len(t) == 0 {
			b.WriteString(" []\n")
			return
		}
		if afterDash {
			b.WriteByte(' ')
		} else {
			b.WriteByte('\n')
		}
		for i, e := range t {
			if i > 0 || !afterDash {
				b.WriteString(strings.Repeat(" ", indent))
			}
			b.WriteByte('-')
			yamlValue(b, e, indent+2, true)
		}
	default:
		b.WriteByte(' ')
		b.WriteString(yamlScalar(v))
		b.WriteByte('\n')
	}
}

func yamlScalar(v any) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(t)
	case json.Number:
		return t.String()
	case string:
		return yamlString(t)
	}
	return yamlString(fmt.Sprint(v))
}

// yamlReserved are the words YAML 1.1 or 1.2 reads as booleans or null.
var yamlReserved = map[string]bool{"true": true, "false": true, "yes": true, "no": true, "on": true, "off": true,
	"y": true, "n": true, "null": true}

// yamlString returns s plain when that is unambiguous, else double-quoted.
func yamlString(s string) string {
	if yamlPlain(s) {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\uFFFD`)
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == 0:
			b.WriteString(`\0`)
		case r == 0x1b:
			b.WriteString(`\e`)
		case r < 0x20 || (r >= 0x7f && r <= 0x9f):
			fmt.Fprintf(&b, `\x%02X`, r)
		case r != ' ' && !unicode.IsPrint(r):
			if r > 0xffff {
				fmt.Fprintf(&b, `\U%08X`, r)
			} else {
				fmt.Fprintf(&b, `\u%04X`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// yamlPlain reports whether s can be written unquoted: it starts with an
// ASCII letter, '/' or '_', holds only ASCII letters, digits, spaces and
// _-./+()@,= (no ':' or '#'), does not end in a space, and is not a
// reserved word.
func yamlPlain(s string) bool {
	if s == "" || yamlReserved[strings.ToLower(s)] || s[len(s)-1] == ' ' {
		return false
	}
	c := s[0]
	if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '/' || c == '_') {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte(" _-./+()@,=", c) >= 0:
		default:
			return false
		}
	}
	return true
}
