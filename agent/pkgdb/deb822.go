package pkgdb

import "bytes"

// field is one "Name: value" line of a deb822 stanza. Both slices point into
// the scanned buffer; only the first line of a multi-line value is kept.
type field struct {
	name, value []byte
}

// stanza is the fields of one deb822 paragraph (dpkg status, apt Packages and
// Release files). It is reused between paragraphs: copy what you keep.
type stanza []field

// get returns the value of the field name (case-insensitive, as deb822
// field names are), or "".
func (s stanza) get(name string) string {
	for _, f := range s {
		if len(f.name) == len(name) && bytes.EqualFold(f.name, []byte(name)) {
			return string(f.value)
		}
	}
	return ""
}

// scanStanzas calls fn for every paragraph of data, in order. Paragraphs are
// separated by blank lines (lines holding only spaces or tabs count as
// blank); continuation lines (starting with a space or tab) and lines without
// a colon are skipped. Returning false from fn stops the scan. It never fails:
// whatever is not a field is ignored, since the input is untrusted.
func scanStanzas(data []byte, fn func(stanza) bool) {
	var cur stanza
	for len(data) > 0 {
		var line []byte
		line, data = nextLine(data)
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(bytes.Trim(line, " \t")) == 0 {
			if len(cur) > 0 && !fn(cur) {
				return
			}
			cur = cur[:0]
			continue
		}
		if line[0] == ' ' || line[0] == '\t' || line[0] == '#' {
			continue
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		cur = append(cur, field{bytes.TrimSpace(name), bytes.TrimSpace(value)})
	}
	if len(cur) > 0 {
		fn(cur)
	}
}

// nextLine splits data at its first newline: the line without it, and
// what follows (nil after the last line).
func nextLine(data []byte) (line, rest []byte) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return data[:i], data[i+1:]
	}
	return data, nil
}
