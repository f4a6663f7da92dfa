package pkgdb

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
)

// parsePlist decodes an Apple property list, XML ("<?xml …><plist>") or
// binary ("bplist00"), into Go values: map[string]any for dict, []any for
// array, string, int64, float64, bool, time.Time for date and []byte for
// data. macOS keeps Info.plist files and /Library/Receipts/
// InstallHistory.plist in these formats. (No macOS machine exists where
// this is developed: the parser is tested on files written by hand to
// Apple's documented formats.)
func parsePlist(data []byte) (any, error) {
	if bytes.HasPrefix(data, []byte("bplist00")) {
		return parseBinaryPlist(data)
	}
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = false
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("plist: no <plist> element: %w", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if se.Name.Local != "plist" {
				return nil, fmt.Errorf("plist: root element is <%s>, not <plist>", se.Name.Local)
			}
			return xmlPlistValue(dec, nil, 0)
		}
	}
}

// maxPlistDepth bounds nesting, so a hostile file cannot exhaust the stack.
const maxPlistDepth = 64

// xmlPlistValue reads the next value element (start given, or the next one
// found) and its content.
func xmlPlistValue(dec *xml.Decoder, start *xml.StartElement, depth int) (any, error) {
	if depth > maxPlistDepth {
		return nil, errors.New("plist: nested too deeply")
	}
	for start == nil {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("plist: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			start = &t
		case xml.EndElement:
			return nil, errEndOfContainer
		}
	}
	switch start.Name.Local {
	case "dict":
		m := map[string]any{}
		for {
			key, err := nextKey(dec)
			if errors.Is(err, errEndOfContainer) {
				return m, nil
			}
			if err != nil {
				return nil, err
			}
			v, err := xmlPlistValue(dec, nil, depth+1)
			if errors.Is(err, errEndOfContainer) {
				return nil, fmt.Errorf("plist: key %q has no value", key)
			}
			if err != nil {
				return nil, err
			}
			m[key] = v
		}
	case "array":
		var a []any
		for {
			v, err := xmlPlistValue(dec, nil, depth+1)
			if errors.Is(err, errEndOfContainer) {
				return a, nil
			}
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
	case "true", "false":
		if err := dec.Skip(); err != nil {
			return nil, err
		}
		return start.Name.Local == "true", nil
	}
	var text string
	if err := dec.DecodeElement(&text, start); err != nil {
		return nil, fmt.Errorf("plist: <%s>: %w", start.Name.Local, err)
	}
	return plistScalar(start.Name.Local, strings.TrimSpace(text))
}

// errEndOfContainer ends a dict or array.
var errEndOfContainer = errors.New("plist: end of container")

// nextKey reads the next <key> of a dict, or errEndOfContainer at </dict>.
func nextKey(dec *xml.Decoder) (string, error) {
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", fmt.Errorf("plist: %w", err)
		}
		switch t := tok.(type) {
		case xml.EndElement:
			return "", errEndOfContainer
		case xml.StartElement:
			if t.Name.Local != "key" {
				return "", fmt.Errorf("plist: <%s> where a <key> was expected", t.Name.Local)
			}
			var k string
			if err := dec.DecodeElement(&k, &t); err != nil {
				return "", err
			}
			return k, nil
		}
	}
}

// plistScalar converts the text of a scalar element.
func plistScalar(kind, text string) (any, error) {
	switch kind {
	case "string":
		return text, nil
	case "integer":
		return strconv.ParseInt(text, 10, 64)
	case "real":
		return strconv.ParseFloat(text, 64)
	case "date":
		return time.Parse(time.RFC3339, text)
	case "data":
		return base64.StdEncoding.DecodeString(strings.Join(strings.Fields(text), ""))
	}
	return nil, fmt.Errorf("plist: unknown element <%s>", kind)
}

// bplist holds a binary plist being decoded.
type bplist struct {
	data    []byte
	offsets []uint64
	refSize int
	work    int    // objects and references decoded so far, bounded by maxBplistWork
	open    []bool // containers being decoded: a reference to one is a cycle
}

// maxBplistWork bounds the objects and references decoded from one binary
// plist: objects may be shared, so a small hostile file could otherwise
// expand exponentially (an array of a thousand references to an array of a
// thousand references …), and every visit of a container reads all its
// references. Real Info.plist and InstallHistory.plist files need a few
// thousand.
const maxBplistWork = 1 << 20

// appleEpoch is where binary plist dates count from.
var appleEpoch = time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)

// parseBinaryPlist decodes the "bplist00" format: objects, an offset
// table, and a 32-byte trailer naming the top object.
func parseBinaryPlist(data []byte) (any, error) {
	if len(data) < 8+32 {
		return nil, errors.New("bplist: too short")
	}
	tr := data[len(data)-32:]
	offSize, refSize := int(tr[6]), int(tr[7])
	num, top, table := binary.BigEndian.Uint64(tr[8:]), binary.BigEndian.Uint64(tr[16:]), binary.BigEndian.Uint64(tr[24:])
	if offSize < 1 || offSize > 8 || refSize < 1 || refSize > 8 || num == 0 || num > uint64(len(data)) || top >= num ||
		table > uint64(len(data)) || num*uint64(offSize) > uint64(len(data))-table {
		return nil, errors.New("bplist: bad trailer")
	}
	p := &bplist{data: data, refSize: refSize, offsets: make([]uint64, num), open: make([]bool, num)}
	for i := range p.offsets {
		p.offsets[i] = beUint(data[table+uint64(i*offSize):][:offSize])
	}
	return p.object(top, 0)
}

func beUint(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// object decodes object number ref.
func (p *bplist) object(ref uint64, depth int) (any, error) {
	if depth > maxPlistDepth {
		return nil, errors.New("bplist: nested too deeply")
	}
	if p.work++; p.work > maxBplistWork {
		return nil, errors.New("bplist: too many objects")
	}
	if ref >= uint64(len(p.offsets)) || p.offsets[ref] >= uint64(len(p.data)) {
		return nil, errors.New("bplist: object reference out of range")
	}
	if p.open[ref] {
		return nil, fmt.Errorf("bplist: object %d contains itself", ref)
	}
	off := p.offsets[ref]
	marker := p.data[off]
	kind, info := marker>>4, int(marker&0x0f)
	body := p.data[off+1:]
	switch kind {
	case 0x0:
		switch marker {
		case 0x08:
			return false, nil
		case 0x09:
			return true, nil
		}
		return nil, nil
	case 0x1:
		n := 1 << info
		if n > 8 || len(body) < n {
			return nil, errors.New("bplist: bad integer")
		}
		return int64(beUint(body[:n])), nil
	case 0x2, 0x3:
		n := 1 << info
		if (n != 4 && n != 8) || len(body) < n {
			return nil, errors.New("bplist: bad real")
		}
		f := float64(math.Float32frombits(uint32(beUint(body[:n]))))
		if n == 8 {
			f = math.Float64frombits(beUint(body[:n]))
		}
		if kind == 0x3 {
			return appleEpoch.Add(time.Duration(f * float64(time.Second))), nil
		}
		return f, nil
	}
	count, body, err := p.count(info, body)
	if err != nil {
		return nil, err
	}
	switch kind {
	case 0x4, 0x5:
		if uint64(len(body)) < count {
			return nil, errors.New("bplist: truncated data")
		}
		if kind == 0x4 {
			return append([]byte(nil), body[:count]...), nil
		}
		return string(body[:count]), nil
	case 0x6:
		if uint64(len(body))/2 < count {
			return nil, errors.New("bplist: truncated string")
		}
		u := make([]uint16, count)
		for i := range u {
			u[i] = binary.BigEndian.Uint16(body[2*i:])
		}
		return string(utf16.Decode(u)), nil
	case 0xA:
		refs, err := p.refs(body, count)
		if err != nil {
			return nil, err
		}
		p.open[ref] = true
		defer func() { p.open[ref] = false }()
		a := make([]any, 0, len(refs))
		for _, r := range refs {
			v, err := p.object(r, depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		return a, nil
	case 0xD:
		refs, err := p.refs(body, 2*count)
		if err != nil {
			return nil, err
		}
		p.open[ref] = true
		defer func() { p.open[ref] = false }()
		m := make(map[string]any, count)
		for i := uint64(0); i < count; i++ {
			k, err := p.object(refs[i], depth+1)
			if err != nil {
				return nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, errors.New("bplist: dict key is not a string")
			}
			if m[ks], err = p.object(refs[count+i], depth+1); err != nil {
				return nil, err
			}
		}
		return m, nil
	}
	return nil, fmt.Errorf("bplist: unsupported object type 0x%x", marker)
}

// count reads a container's length: the marker's low nibble, or when that
// is 0xF an integer object following the marker.
func (p *bplist) count(info int, body []byte) (uint64, []byte, error) {
	if info != 0x0f {
		return uint64(info), body, nil
	}
	if len(body) < 1 || body[0]>>4 != 0x1 {
		return 0, nil, errors.New("bplist: bad length")
	}
	n := 1 << (body[0] & 0x0f)
	if n > 8 || len(body) < 1+n {
		return 0, nil, errors.New("bplist: bad length")
	}
	c := beUint(body[1 : 1+n])
	if c > uint64(len(p.data)) {
		return 0, nil, errors.New("bplist: length out of range")
	}
	return c, body[1+n:], nil
}

// refs reads n object references.
func (p *bplist) refs(body []byte, n uint64) ([]uint64, error) {
	if n > uint64(len(body))/uint64(p.refSize) {
		return nil, errors.New("bplist: truncated references")
	}
	if p.work += int(n); p.work > maxBplistWork {
		return nil, errors.New("bplist: too many objects")
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = beUint(body[i*p.refSize:][:p.refSize])
	}
	return out, nil
}
