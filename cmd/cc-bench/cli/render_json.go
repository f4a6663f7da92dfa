package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// A result as the renderers see it: JSON decoded with its objects' key
// order and its numbers' text kept. A value is nil, bool, json.Number,
// string, []any or jsonObject. An agent chooses every byte of it, so
// nothing here trusts a type: a lookup of the wrong shape is "missing".

// jsonObject is a JSON object in the order its keys came.
type jsonObject []jsonMember

type jsonMember struct {
	key   string
	value any
}

// get returns the value of key, the last one if repeated (as
// encoding/json does).
func (o jsonObject) get(key string) (any, bool) {
	for i := len(o) - 1; i >= 0; i-- {
		if o[i].key == key {
			return o[i].value, true
		}
	}
	return nil, false
}

// maxDepth bounds how deep a result may nest before it is refused.
const maxDepth = 200

// decodeOrdered decodes one JSON value.
func decodeOrdered(raw []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	v, err := decodeValue(d, 0)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("data after the JSON value")
	}
	return v, nil
}

func decodeValue(d *json.Decoder, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxDepth)
	}
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			obj := jsonObject{}
			for d.More() {
				kt, err := d.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				v, err := decodeValue(d, depth+1)
				if err != nil {
					return nil, err
				}
				obj = append(obj, jsonMember{k, v})
			}
			_, err := d.Token()
			return obj, err
		case '[':
			arr := []any{}
			for d.More() {
				v, err := decodeValue(d, depth+1)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			_, err := d.Token()
			return arr, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	}
	return tok, nil // nil, bool, json.Number, string
}

// fieldPath is a dotted path into a result: "memory.used_percent",
// "packages.0.name" (a number indexes an array).
type fieldPath struct {
	text  string
	parts []string
}

// parseFields parses --fields: comma-separated dotted paths.
func parseFields(s string) ([]fieldPath, error) {
	var out []fieldPath
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			return nil, usageErrorf("--fields %q: an empty field; want comma-separated paths like load1,memory.used_percent", s)
		}
		parts := strings.Split(f, ".")
		for _, p := range parts {
			if p == "" {
				return nil, usageErrorf("--fields: %q has an empty part; want a dotted path like memory.used_percent", f)
			}
		}
		out = append(out, fieldPath{f, parts})
	}
	return out, nil
}

// lookup resolves a path in v; false when any part is missing.
func lookup(v any, parts ...string) (any, bool) {
	for _, p := range parts {
		switch c := v.(type) {
		case jsonObject:
			var ok bool
			if v, ok = c.get(p); !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			v = c[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// lookupPath resolves a dotted path.
func lookupPath(v any, path string) (any, bool) { return lookup(v, strings.Split(path, ".")...) }

// valueText renders a value for a table or CSV cell: a string as it is,
// a number as sent, an array of scalars comma-separated, anything else
// as compact JSON; "" for a missing value or null.
func valueText(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	case json.Number:
		return t.String()
	case bool:
		return strconv.FormatBool(t)
	case []any:
		parts := make([]string, 0, len(t))
		for _, e := range t {
			switch e.(type) {
			case []any, jsonObject:
				return compactJSON(v)
			}
			parts = append(parts, valueText(e))
		}
		return strings.Join(parts, ",")
	}
	return compactJSON(v)
}

// compactJSON encodes a decoded value back to JSON, keys in order.
func compactJSON(v any) string {
	var b strings.Builder
	writeJSON(&b, v)
	return b.String()
}

func writeJSON(b *strings.Builder, v any) {
	switch t := v.(type) {
	case jsonObject:
		b.WriteByte('{')
		for i, m := range t {
			if i > 0 {
				b.WriteByte(',')
			}
			k, _ := json.Marshal(m.key)
			b.Write(k)
			b.WriteByte(':')
			writeJSON(b, m.value)
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, e := range t {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSON(b, e)
		}
		b.WriteByte(']')
	default:
		s, _ := json.Marshal(t)
		b.Write(s)
	}
}

// number returns v as a float when it is a finite JSON number.
func number(v any) (float64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// str returns v when it is a string.
func str(v any) (string, bool) {
	s, ok := v.(string)
	return s, ok
}

// numText renders a computed number: an integer without decimals, else
// at most two decimals (three significant digits below 1).
func numText(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.FormatInt(int64(f), 10)
	}
	var s string
	if math.Abs(f) < 1 {
		s = strconv.FormatFloat(f, 'g', 3, 64)
		if strings.Contains(s, "e") {
			s = strconv.FormatFloat(f, 'f', 6, 64)
		}
	} else {
		s = strconv.FormatFloat(f, 'f', 2, 64)
	}
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// bytesText renders a byte count: 512B, 1.5KiB, 15.6GiB.
func bytesText(f float64) string {
	const unit = 1024
	if f < unit {
		return numText(math.Round(f)) + "B"
	}
	exp, div := 0, float64(unit)
	for n := f / unit; n >= unit && exp < 5; n /= unit {
		div *= unit
		exp++
	}
	v := f / div
	s := strconv.FormatFloat(v, 'f', 1, 64)
	if v >= 100 {
		s = strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strings.TrimSuffix(s, ".0") + string("KMGTPE"[exp]) + "iB"
}
