package geo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// siteEntry is one object of a sites file (see the package comment).
type siteEntry struct {
	CIDR        string   `json:"cidr"`
	Site        string   `json:"site"`
	City        string   `json:"city"`
	Region      string   `json:"region"`
	Country     string   `json:"country"`
	CountryCode string   `json:"country_code"`
	Latitude    *float64 `json:"latitude"`
	Longitude   *float64 `json:"longitude"`
}

// sites is a sites file, indexed for longest-prefix lookups: one map of
// every network, and per address family the prefix lengths present,
// longest first.
type sites struct {
	n        int
	byPrefix map[netip.Prefix]*fleet.Location
	v4, v6   []int
}

// maxSiteText bounds each text field of an entry.
const maxSiteText = 200

// example is shown with an error about the file's shape.
const example = `[{"cidr":"10.20.0.0/16","site":"nb-office","city":"New Brunswick","country_code":"US"}]`

func loadSites(path string) (*sites, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sites file: %w", err)
	}
	s, err := parseSites(data)
	if err != nil {
		return nil, fmt.Errorf("sites file %s: %w", path, err)
	}
	return s, nil
}

// parseSites reads a sites file; an error names the entry (1-based) and
// its line.
func parseSites(data []byte) (*sites, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return nil, fmt.Errorf("want a JSON array of networks, like %s", example)
	}
	s := &sites{byPrefix: map[netip.Prefix]*fleet.Location{}}
	lineOf := map[netip.Prefix][2]int{} // entry, line
	for i := 1; dec.More(); i++ {
		line := lineAt(data, dec.InputOffset())
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("entry %d (line %d): %v", i, lineAt(data, syntaxOffset(err, dec)), jsonText(err))
		}
		p, loc, err := parseEntry(raw)
		if err != nil {
			return nil, fmt.Errorf("entry %d (line %d): %w", i, line, err)
		}
		if prev, dup := lineOf[p]; dup {
			return nil, fmt.Errorf("entry %d (line %d): network %s is also entry %d (line %d); keep one", i, line, p, prev[0], prev[1])
		}
		lineOf[p] = [2]int{i, line}
		s.byPrefix[p] = loc
		s.n++
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("line %d: %v (the file is one JSON array, like %s)", lineAt(data, syntaxOffset(err, dec)), jsonText(err), example)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("line %d: text after the array's closing ]", lineAt(data, dec.InputOffset()))
	}
	for p := range s.byPrefix {
		lens := &s.v6
		if p.Addr().Is4() {
			lens = &s.v4
		}
		if !slices.Contains(*lens, p.Bits()) {
			*lens = append(*lens, p.Bits())
		}
	}
	slices.SortFunc(s.v4, func(a, b int) int { return b - a })
	slices.SortFunc(s.v6, func(a, b int) int { return b - a })
	return s, nil
}

// parseEntry checks one entry and returns its network and location.
func parseEntry(raw []byte) (netip.Prefix, *fleet.Location, error) {
	var e siteEntry
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(&e); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			if ute.Field == "" {
				return netip.Prefix{}, nil, fmt.Errorf("want an object like %s, got a JSON %s", example[1:len(example)-1], ute.Value)
			}
			return netip.Prefix{}, nil, fmt.Errorf("%q: want a %s, got a JSON %s", ute.Field, jsonKind(ute.Type.Kind().String()), ute.Value)
		}
		if strings.HasPrefix(err.Error(), "json: unknown field ") {
			return netip.Prefix{}, nil, fmt.Errorf("unknown field %s: the fields are cidr, site, city, region, country, country_code, latitude, longitude",
				strings.TrimPrefix(err.Error(), "json: unknown field "))
		}
		return netip.Prefix{}, nil, errors.New(jsonText(err))
	}
	p, err := parseCIDR(e.CIDR)
	if err != nil {
		return netip.Prefix{}, nil, err
	}
	loc := &fleet.Location{Source: fleet.LocationFromSites}
	for _, f := range []struct {
		name string
		in   string
		out  *string
	}{{"site", e.Site, &loc.Site}, {"city", e.City, &loc.City}, {"region", e.Region, &loc.Region},
		{"country", e.Country, &loc.Country}, {"country_code", e.CountryCode, &loc.CountryCode}} {
		v := strings.TrimSpace(f.in)
		if err := checkText(v); err != nil {
			return netip.Prefix{}, nil, fmt.Errorf("%q: %w", f.name, err)
		}
		*f.out = v
	}
	if loc.CountryCode != "" {
		name := CountryName(loc.CountryCode)
		if name == "" {
			return netip.Prefix{}, nil, fmt.Errorf("\"country_code\" %q is not an ISO 3166-1 alpha-2 code (US, DE, JP …)", loc.CountryCode)
		}
		loc.CountryCode = strings.ToUpper(loc.CountryCode)
		if loc.Country == "" {
			loc.Country = name
		}
	}
	if *loc == (fleet.Location{Source: fleet.LocationFromSites}) {
		return netip.Prefix{}, nil, errors.New("says nothing of the place: give site, city, region, country or country_code")
	}
	if (e.Latitude == nil) != (e.Longitude == nil) {
		return netip.Prefix{}, nil, errors.New("give both latitude and longitude, or neither")
	}
	if e.Latitude != nil {
		if *e.Latitude < -90 || *e.Latitude > 90 || *e.Longitude < -180 || *e.Longitude > 180 {
			return netip.Prefix{}, nil, fmt.Errorf("latitude %g, longitude %g: want degrees, latitude within ±90 and longitude within ±180", *e.Latitude, *e.Longitude)
		}
		loc.Latitude, loc.Longitude = *e.Latitude, *e.Longitude
	}
	return p, loc, nil
}

// parseCIDR reads an entry's network: ADDRESS/BITS or one address.
func parseCIDR(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Prefix{}, errors.New(`no "cidr": give the network, e.g. "10.20.0.0/16" or "2001:db8::/32", or one address`)
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, fmt.Errorf("\"cidr\" %q is not a network: want ADDRESS/BITS, e.g. 10.20.0.0/16 or 2001:db8::/32", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("\"cidr\" %q is not a network or an address: want e.g. 10.20.0.0/16, 2001:db8::/32 or 10.20.0.7", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("\"cidr\" %q has address bits set past /%d: did you mean %s?", s, p.Bits(), m)
	}
	if a := p.Addr(); a.Is4In6() { // at least /96, being masked
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p, nil
}

// checkText refuses what a person would not have meant in a name: control
// characters, and text longer than maxSiteText bytes.
func checkText(s string) error {
	if len(s) > maxSiteText {
		return fmt.Errorf("%d bytes long: at most %d", len(s), maxSiteText)
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		return fmt.Errorf("has a control character at byte %d", i)
	}
	return nil
}

// lookup returns a copy of the location of the most specific network
// holding a, or nil.
func (s *sites) lookup(a netip.Addr) *fleet.Location {
	if s == nil {
		return nil
	}
	lens := s.v6
	if a.Is4() {
		lens = s.v4
	}
	for _, bits := range lens {
		p, err := a.Prefix(bits)
		if err != nil {
			continue
		}
		if loc, ok := s.byPrefix[p]; ok {
			c := *loc
			return &c
		}
	}
	return nil
}

// lineAt is the 1-based line of byte offset off in data.
func lineAt(data []byte, off int64) int {
	if off < 0 {
		off = 0
	}
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	rest := data[off:]
	// The decoder's offset is just past the previous token: the entry
	// starts after the separator and white space.
	skip := len(rest) - len(bytes.TrimLeft(rest, ", \t\r\n"))
	return 1 + bytes.Count(data[:off+int64(skip)], []byte("\n"))
}

// syntaxOffset is where a JSON syntax error is, or the decoder's offset.
func syntaxOffset(err error, dec *json.Decoder) int64 {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return se.Offset
	}
	return dec.InputOffset()
}

// jsonText is a JSON error without Go's "json: " prefix; a truncated
// file says so.
func jsonText(err error) string {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "the file ends inside the array: is a ] or } missing?"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// jsonKind names a Go kind as JSON does.
func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "float64":
		return "number"
	}
	return kind
}
