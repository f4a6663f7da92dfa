package functions

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// ParseArgs decodes a request body (a JSON object, or empty for no
// arguments) against spec: unknown names, wrong types and missing required
// arguments are a fleet.CodeBadRequest error. A string value is converted to
// the declared type, so `--arg limit=10` from a command line works.
func ParseArgs(spec Spec, body []byte) (Args, error) {
	args := Args{}
	if len(trimSpace(body)) == 0 {
		body = []byte("{}")
	}
	var raw map[string]json.RawMessage
	if t := trimSpace(body); len(t) == 2 && t[0] == '{' && t[1] == '}' {
		// No arguments, as nearly every call of a fleet-wide
		// function: nothing to decode.
	} else if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fleet.Errorf(fleet.CodeBadRequest, "request to %s must be a JSON object of arguments: %v", spec.Name, err)
	}
	declared := map[string]Arg{}
	for _, a := range spec.Args {
		declared[a.Name] = a
	}
	for name, v := range raw {
		a, ok := declared[name]
		if !ok {
			return nil, fleet.Errorf(fleet.CodeBadRequest, "%s has no argument %q%s", spec.Name, name, argList(spec))
		}
		val, err := convertArg(a, v)
		if err != nil {
			return nil, fleet.Errorf(fleet.CodeBadRequest, "%s: argument %q: %v", spec.Name, name, err)
		}
		args[name] = val
	}
	for _, a := range spec.Args {
		if _, ok := args[a.Name]; a.Required && !ok {
			return nil, fleet.Errorf(fleet.CodeBadRequest, "%s: argument %q (%s) is required", spec.Name, a.Name, a.Type)
		}
	}
	return args, nil
}

func argList(spec Spec) string {
	if len(spec.Args) == 0 {
		return " (it takes no arguments)"
	}
	s := " (it takes:"
	for _, a := range spec.Args {
		s += " " + a.Name + ":" + a.Type
	}
	return s + ")"
}

func convertArg(a Arg, v json.RawMessage) (any, error) {
	// Numbers are kept as json.Number: decoding them to float64 would round
	// integers above 2^53 and make int64(f) undefined past 2^63.
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return nil, err
	}
	str, isStr := x.(string)
	num, isNum := x.(json.Number)
	if isNum {
		str = string(num)
	}
	switch a.Type {
	case TypeString:
		if !isStr {
			return nil, fmt.Errorf("want a string, got %s", v)
		}
		return str, nil
	case TypeInt:
		if isStr || isNum {
			if n, ok := parseInt(str); ok {
				return n, nil
			}
		}
		return nil, fmt.Errorf("want an integer, got %s", v)
	case TypeFloat:
		if isStr || isNum {
			if f, err := strconv.ParseFloat(str, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
				return f, nil
			}
		}
		return nil, fmt.Errorf("want a number, got %s", v)
	case TypeBool:
		if b, ok := x.(bool); ok {
			return b, nil
		}
		if isStr {
			if b, err := strconv.ParseBool(str); err == nil {
				return b, nil
			}
		}
		return nil, fmt.Errorf("want true or false, got %s", v)
	}
	return nil, fmt.Errorf("declared with unknown type %q", a.Type)
}

// parseInt accepts a decimal integer, also written as a JSON number with a
// zero fraction or an exponent (10.0, 1e3), within int64.
func parseInt(s string) (int64, bool) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, false
	}
	return int64(f), true
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}
