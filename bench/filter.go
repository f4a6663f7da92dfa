package bench

import (
	"encoding/json"
	"regexp"
	"strings"
)

// Limits on a filter, which comes from users.
const (
	maxFilterLen   = 4096
	maxFilterDepth = 64
)

// Filter is a condition on a call's JSON result, such as
// `load1 > 10 and memory.used_percent >= 90`. Parse one with [ParseFilter].
// A nil *Filter matches every result.
type Filter struct {
	src  string
	root node
}

// ParseFilter parses a filter expression:
//
//	expr    = expr ("or" | "||") expr | expr ("and" | "&&") expr
//	        | ("not" | "!") expr | "(" expr ")" | operand [op operand]
//	op      = ">" | ">=" | "<" | "<=" | "==" | "!=" | "=~" | "!~"
//	operand = field path | number | "string" | 'string' | true | false | null
//
// "and" binds tighter than "or". A field path is dotted (memory.used_percent)
// and a numeric part indexes an array (disks.0.used). The right of =~ and !~
// is a quoted regular expression. A bare operand is true when it is true, a
// non-zero number, or a non-empty string, array or object.
//
// A comparison with a missing field, or an ordering of values of different
// types, is unknown rather than false, and "not" of unknown stays unknown:
// a result without the field never matches, whether or not it is negated.
// Errors are *[FilterError] with the position of the fault.
func ParseFilter(s string) (*Filter, error) {
	if len(s) > maxFilterLen {
		return nil, filterErr(s[:maxFilterLen], maxFilterLen, "the filter is %d bytes long; at most %d are allowed", len(s), maxFilterLen)
	}
	if strings.TrimSpace(s) == "" {
		return nil, filterErr(s, 0, "the filter is empty; want e.g. load1 > 10")
	}
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	p := &parser{src: s, toks: toks}
	root, err := p.parseOr(0)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tokEOF {
		if t.kind == tokRParen {
			return nil, filterErr(s, t.pos, `this ")" closes nothing`)
		}
		return nil, filterErr(s, t.pos, `unexpected %s after a complete condition; join conditions with "and" or "or"`, t)
	}
	return &Filter{src: s, root: root}, nil
}

// String returns the filter as written.
func (f *Filter) String() string {
	if f == nil {
		return ""
	}
	return f.src
}

// Match reports whether the JSON document result satisfies f. A result that
// is not valid JSON never matches.
func (f *Filter) Match(result json.RawMessage) bool {
	if f == nil {
		return true
	}
	var doc any
	if err := json.Unmarshal(result, &doc); err != nil {
		return false
	}
	return f.MatchValue(doc)
}

// MatchValue is [Filter.Match] for a document already decoded by
// encoding/json into any (map[string]any, []any, float64, string, bool, nil).
func (f *Filter) MatchValue(doc any) bool {
	return f == nil || f.root.eval(doc) == triTrue
}

type parser struct {
	src  string
	toks []token
	i    int
}

func (p *parser) peek() token { return p.toks[p.i] }
func (p *parser) next() token { t := p.toks[p.i]; p.i++; return t }

func (p *parser) tooDeep(depth int) error {
	if depth > maxFilterDepth {
		return filterErr(p.src, p.peek().pos, "the filter nests deeper than %d levels", maxFilterDepth)
	}
	return nil
}

func (p *parser) parseOr(depth int) (node, error) {
	l, err := p.parseAnd(depth)
	for err == nil && p.peek().kind == tokOr {
		p.next()
		var r node
		if r, err = p.parseAnd(depth); err == nil {
			l = orNode{l, r}
		}
	}
	return l, err
}

func (p *parser) parseAnd(depth int) (node, error) {
	l, err := p.parseNot(depth)
	for err == nil && p.peek().kind == tokAnd {
		p.next()
		var r node
		if r, err = p.parseNot(depth); err == nil {
			l = andNode{l, r}
		}
	}
	return l, err
}

func (p *parser) parseNot(depth int) (node, error) {
	if err := p.tooDeep(depth); err != nil {
		return nil, err
	}
	if p.peek().kind == tokNot {
		p.next()
		x, err := p.parseNot(depth + 1)
		if err != nil {
			return nil, err
		}
		return notNode{x}, nil
	}
	if t := p.peek(); t.kind == tokLParen {
		p.next()
		x, err := p.parseOr(depth + 1)
		if err != nil {
			return nil, err
		}
		if p.peek().kind != tokRParen {
			return nil, filterErr(p.src, p.peek().pos, `want ")" to close the "(" at column %d, found %s`, filterErr(p.src, t.pos, "").Column(), p.peek())
		}
		p.next()
		return x, nil
	}
	return p.parseComparison()
}

func (p *parser) parseComparison() (node, error) {
	l, err := p.parseOperand("")
	if err != nil {
		return nil, err
	}
	if p.peek().kind != tokOp {
		return truthNode{l}, nil
	}
	op := p.next()
	r, err := p.parseOperand(op.text)
	if err != nil {
		return nil, err
	}
	n := cmpNode{op: op.text, l: l, r: r}
	if op.text == "=~" || op.text == "!~" {
		if r.path != nil || r.lit == nil || !isString(r.lit) {
			return nil, filterErr(p.src, p.toks[p.i-1].pos, `the right of %s must be a quoted regular expression, e.g. hostname =~ "^web"`, op.text)
		}
		if n.re, err = regexp.Compile(r.lit.(string)); err != nil {
			return nil, filterErr(p.src, p.toks[p.i-1].pos, "bad regular expression: %v", err)
		}
	}
	return n, nil
}

func isString(v any) bool { _, ok := v.(string); return ok }

// parseOperand reads a field path or a literal; after names the operator
// before it, for the error message.
func (p *parser) parseOperand(after string) (operand, error) {
	t := p.next()
	switch t.kind {
	case tokIdent:
		parts := strings.Split(t.text, ".")
		for _, part := range parts {
			if part == "" {
				return operand{}, filterErr(p.src, t.pos, "field path %q has an empty part", t.text)
			}
		}
		return operand{path: parts}, nil
	case tokNumber:
		return operand{lit: t.num}, nil
	case tokString:
		return operand{lit: t.text}, nil
	case tokTrue, tokFalse:
		return operand{lit: t.kind == tokTrue}, nil
	case tokNull:
		return operand{isNull: true}, nil
	}
	p.i--
	if after != "" {
		return operand{}, filterErr(p.src, t.pos, "want a value after %q, found %s", after, t)
	}
	return operand{}, filterErr(p.src, t.pos, `want a field, a number, a quoted string or "(", found %s`, t)
}
