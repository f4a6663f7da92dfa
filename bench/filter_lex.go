package bench

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// tokKind is the kind of a filter token.
type tokKind int

const (
	tokEOF tokKind = iota
	tokIdent
	tokNumber
	tokString
	tokOp // > >= < <= == != =~ !~
	tokAnd
	tokOr
	tokNot
	tokTrue
	tokFalse
	tokNull
	tokLParen
	tokRParen
)

type token struct {
	kind tokKind
	pos  int    // byte offset in the expression
	text string // as written (for an ident or op), or the decoded string
	num  float64
}

func (t token) String() string {
	switch t.kind {
	case tokEOF:
		return "the end of the filter"
	case tokString:
		return strconv.Quote(t.text) + " (a string)"
	case tokIdent:
		return "field " + t.text
	}
	return strconv.Quote(t.text)
}

var keywords = map[string]tokKind{
	"and": tokAnd, "or": tokOr, "not": tokNot,
	"true": tokTrue, "false": tokFalse, "null": tokNull,
}

// lex splits a filter expression into tokens.
func lex(src string) ([]token, error) {
	var toks []token
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
			continue
		case c == '(' || c == ')':
			k := tokLParen
			if c == ')' {
				k = tokRParen
			}
			toks = append(toks, token{kind: k, pos: i, text: string(c)})
			i++
			continue
		case c == '"' || c == '\'':
			t, n, err := lexString(src, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
			i += n
			continue
		case isDigit(c) || (c == '-' && i+1 < len(src) && (isDigit(src[i+1]) || src[i+1] == '.')) || (c == '.' && i+1 < len(src) && isDigit(src[i+1])):
			t, n, err := lexNumber(src, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
			i += n
			continue
		case isIdentStart(c):
			n := 1
			for i+n < len(src) && isIdentChar(src[i+n]) {
				n++
			}
			word := src[i : i+n]
			k, ok := keywords[word]
			if !ok {
				k = tokIdent
			}
			toks = append(toks, token{kind: k, pos: i, text: word})
			i += n
			continue
		}
		if op := lexOp(src[i:]); op != "" {
			k := tokOp
			switch op {
			case "&&":
				k = tokAnd
			case "||":
				k = tokOr
			case "!":
				k = tokNot
			}
			toks = append(toks, token{kind: k, pos: i, text: op})
			i += len(op)
			continue
		}
		r, _ := utf8.DecodeRuneInString(src[i:])
		hint := ""
		if c == '=' {
			hint = `; to compare use "=="`
		} else if c == '&' || c == '|' {
			hint = `; use "and" / "&&" or "or" / "||"`
		}
		return nil, filterErr(src, i, "unexpected %q%s", r, hint)
	}
	return append(toks, token{kind: tokEOF, pos: len(src)}), nil
}

func lexOp(s string) string {
	for _, op := range []string{">=", "<=", "==", "!=", "=~", "!~", "&&", "||", ">", "<", "!"} {
		if strings.HasPrefix(s, op) {
			return op
		}
	}
	return ""
}

func lexNumber(src string, start int) (token, int, error) {
	n := 1
	for start+n < len(src) {
		c := src[start+n]
		if isDigit(c) || c == '.' || c == '_' || ((c == '+' || c == '-') && (src[start+n-1] == 'e' || src[start+n-1] == 'E')) || c == 'e' || c == 'E' {
			n++
			continue
		}
		if isIdentChar(c) {
			return token{}, 0, filterErr(src, start+n, "unexpected %q in number %q", c, src[start:start+n+1])
		}
		break
	}
	text := src[start : start+n]
	f, err := strconv.ParseFloat(strings.ReplaceAll(text, "_", ""), 64)
	if err != nil {
		return token{}, 0, filterErr(src, start, "%q is not a number", text)
	}
	return token{kind: tokNumber, pos: start, text: text, num: f}, n, nil
}

// lexString reads a quoted string. Backslash escapes \" \' \\ \n \t;
// any other backslash stays as it is, so regular expressions such as
// "\d+" need no doubling.
func lexString(src string, start int) (token, int, error) {
	quote := src[start]
	var b strings.Builder
	for i := start + 1; i < len(src); i++ {
		c := src[i]
		switch {
		case c == quote:
			return token{kind: tokString, pos: start, text: b.String()}, i - start + 1, nil
		case c == '\\' && i+1 < len(src):
			i++
			switch src[i] {
			case '"', '\'', '\\':
				b.WriteByte(src[i])
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte('\\')
				b.WriteByte(src[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return token{}, 0, filterErr(src, start, "the string opened here is not closed: add a closing %c", quote)
}

func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool { return c == '_' || c == '$' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
func isIdentChar(c byte) bool  { return isIdentStart(c) || isDigit(c) || c == '.' || c == '-' }

// FilterError is a filter that does not parse, with the position of the
// fault.
type FilterError struct {
	Expr string
	// Pos is the byte offset of the fault in Expr.
	Pos int
	Msg string
}

// Error returns e.g. `filter "load1 >", column 8: want a value after ">"`.
func (e *FilterError) Error() string {
	return fmt.Sprintf("filter %q, column %d: %s", e.Expr, e.Column(), e.Msg)
}

// Column is the 1-based column (in characters) of the fault.
func (e *FilterError) Column() int { return utf8.RuneCountInString(e.Expr[:e.Pos]) + 1 }

func filterErr(src string, pos int, format string, args ...any) *FilterError {
	return &FilterError{Expr: src, Pos: pos, Msg: fmt.Sprintf(format, args...)}
}
