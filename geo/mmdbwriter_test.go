package geo

import (
	"bytes"
	"encoding/binary"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// testNet is one network of a database writeMMDB builds, and its record.
type testNet struct {
	cidr string
	rec  any
}

// writeMMDB writes a MaxMind DB file (format 2.0, 32-bit records) of nets
// to a new file in t's temp directory and returns its path: a small,
// exact stand-in for a City database, in either layout. ipVersion 6 puts
// IPv4 networks under ::/96, as MaxMind's own databases do.
//
// Values: string, float64 (double), float32, uint32, map[string]any,
// []any. Nested networks are not supported (none is needed).
func writeMMDB(t testing.TB, ipVersion int, dbType string, nets []testNet) string {
	t.Helper()
	type child struct {
		node int // > 0: a node; 0: see data
		data int // -1: empty; else a record's offset in the data section
	}
	nodes := [][2]child{{{data: -1}, {data: -1}}}
	var data bytes.Buffer
	for _, n := range nets {
		p := netip.MustParsePrefix(n.cidr)
		bits, bitLen := p.Bits(), 32
		addr := p.Addr().AsSlice()
		if ipVersion == 6 {
			a16 := p.Addr().As16()
			if p.Addr().Is4() {
				a16 = [16]byte{}
				copy(a16[12:], addr)
				bits += 96
			}
			addr, bitLen = a16[:], 128
		}
		if bits == 0 || bits > bitLen {
			t.Fatalf("writeMMDB: prefix %s", n.cidr)
		}
		off := data.Len()
		encodeValue(&data, n.rec)
		cur := 0
		for i := range bits {
			bit := (addr[i/8] >> (7 - i%8)) & 1
			if i == bits-1 {
				nodes[cur][bit] = child{data: off}
				break
			}
			c := nodes[cur][bit]
			if c.node == 0 {
				if c.data >= 0 {
					t.Fatalf("writeMMDB: %s nests in another network", n.cidr)
				}
				nodes = append(nodes, [2]child{{data: -1}, {data: -1}})
				c = child{node: len(nodes) - 1}
				nodes[cur][bit] = c
			}
			cur = c.node
		}
	}
	count := uint32(len(nodes))
	var out bytes.Buffer
	for _, n := range nodes {
		for _, c := range n {
			v := count // empty
			switch {
			case c.node > 0:
				v = uint32(c.node)
			case c.data >= 0:
				v = count + 16 + uint32(c.data)
			}
			out.Write(binary.BigEndian.AppendUint32(nil, v))
		}
	}
	out.Write(make([]byte, 16))
	out.Write(data.Bytes())
	out.WriteString("\xab\xcd\xefMaxMind.com")
	encodeValue(&out, map[string]any{
		"binary_format_major_version": uint16(2),
		"binary_format_minor_version": uint16(0),
		"build_epoch":                 uint64(1781725941),
		"database_type":               dbType,
		"description":                 map[string]any{"en": "geo test database"},
		"ip_version":                  uint16(ipVersion),
		"languages":                   []any{"en"},
		"node_count":                  count,
		"record_size":                 uint16(32),
	})
	path := filepath.Join(t.TempDir(), "test.mmdb")
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// encodeValue appends v in the MaxMind DB data section format.
func encodeValue(b *bytes.Buffer, v any) {
	switch v := v.(type) {
	case string:
		control(b, 2, len(v))
		b.WriteString(v)
	case float64:
		control(b, 3, 8)
		b.Write(binary.BigEndian.AppendUint64(nil, math.Float64bits(v)))
	case float32:
		control(b, 15, 4)
		b.Write(binary.BigEndian.AppendUint32(nil, math.Float32bits(v)))
	case uint16:
		encodeUint(b, 5, uint64(v))
	case uint32:
		encodeUint(b, 6, uint64(v))
	case uint64:
		encodeUint(b, 9, v)
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		control(b, 7, len(keys))
		for _, k := range keys {
			encodeValue(b, k)
			encodeValue(b, v[k])
		}
	case []any:
		control(b, 11, len(v))
		for _, e := range v {
			encodeValue(b, e)
		}
	default:
		panic("encodeValue: unsupported type")
	}
}

// encodeUint writes an unsigned integer of type typ in as few bytes as
// it needs.
func encodeUint(b *bytes.Buffer, typ int, v uint64) {
	n := 0
	for x := v; x > 0; x >>= 8 {
		n++
	}
	control(b, typ, n)
	for i := n - 1; i >= 0; i-- {
		b.WriteByte(byte(v >> (8 * i)))
	}
}

// control writes a field's control byte(s): its type (extended past 7)
// and size.
func control(b *bytes.Buffer, typ, size int) {
	first := byte(typ << 5)
	if typ > 7 {
		first = 0
	}
	var extra []byte
	switch {
	case size < 29:
		first |= byte(size)
	case size < 285:
		first |= 29
		extra = []byte{byte(size - 29)}
	case size < 65821:
		first |= 30
		extra = binary.BigEndian.AppendUint16(nil, uint16(size-285))
	default:
		first |= 31
		s := size - 65821
		extra = []byte{byte(s >> 16), byte(s >> 8), byte(s)}
	}
	b.WriteByte(first)
	if typ > 7 {
		b.WriteByte(byte(typ - 7))
	}
	b.Write(extra)
}
