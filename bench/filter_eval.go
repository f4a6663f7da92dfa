package bench

import (
	"cmp"
	"reflect"
	"regexp"
	"strconv"
)

// tri is a three-valued truth: a comparison with a missing field is
// unknown, and stays unknown through "not".
type tri int8

const (
	triFalse tri = iota - 1
	triUnknown
	triTrue
)

func triOf(b bool) tri {
	if b {
		return triTrue
	}
	return triFalse
}

type node interface {
	eval(doc any) tri
}

type (
	andNode   struct{ l, r node }
	orNode    struct{ l, r node }
	notNode   struct{ x node }
	truthNode struct{ x operand }
	cmpNode   struct {
		op   string
		l, r operand
		re   *regexp.Regexp
	}
)

func (n andNode) eval(doc any) tri { return min(n.l.eval(doc), n.r.eval(doc)) }
func (n orNode) eval(doc any) tri  { return max(n.l.eval(doc), n.r.eval(doc)) }
func (n notNode) eval(doc any) tri { return -n.x.eval(doc) }

func (n truthNode) eval(doc any) tri {
	v, ok := n.x.value(doc)
	if !ok {
		return triUnknown
	}
	switch v := v.(type) {
	case nil:
		return triFalse
	case bool:
		return triOf(v)
	case float64:
		return triOf(v != 0)
	case string:
		return triOf(v != "")
	case []any:
		return triOf(len(v) > 0)
	case map[string]any:
		return triOf(len(v) > 0)
	}
	return triUnknown
}

func (n cmpNode) eval(doc any) tri {
	l, ok := n.l.value(doc)
	if !ok {
		return triUnknown
	}
	if n.re != nil {
		s, ok := scalarText(l)
		if !ok {
			return triUnknown
		}
		return triOf(n.re.MatchString(s) == (n.op == "=~"))
	}
	r, ok := n.r.value(doc)
	if !ok {
		return triUnknown
	}
	switch n.op {
	case "==":
		return triOf(equal(l, r))
	case "!=":
		return triOf(!equal(l, r))
	}
	c, ok := compare(l, r)
	if !ok {
		return triUnknown
	}
	switch n.op {
	case "<":
		return triOf(c < 0)
	case "<=":
		return triOf(c <= 0)
	case ">":
		return triOf(c > 0)
	default: // ">="
		return triOf(c >= 0)
	}
}

// operand is a field path or a literal.
type operand struct {
	path   []string
	lit    any
	isNull bool
}

// value resolves o in doc; false when a field is missing.
func (o operand) value(doc any) (any, bool) {
	if o.path == nil {
		return o.lit, o.lit != nil || o.isNull
	}
	cur := doc
	for _, part := range o.path {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[part]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

func equal(a, b any) bool {
	switch a := a.(type) {
	case float64:
		b, ok := b.(float64)
		return ok && a == b
	case string:
		b, ok := b.(string)
		return ok && a == b
	case bool:
		b, ok := b.(bool)
		return ok && a == b
	case nil:
		return b == nil
	}
	return reflect.DeepEqual(a, b)
}

// compare orders two numbers or two strings.
func compare(a, b any) (int, bool) {
	switch a := a.(type) {
	case float64:
		if b, ok := b.(float64); ok {
			return cmp.Compare(a, b), true
		}
	case string:
		if b, ok := b.(string); ok {
			return cmp.Compare(a, b), true
		}
	}
	return 0, false
}

func scalarText(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), true
	case bool:
		return strconv.FormatBool(v), true
	}
	return "", false
}
