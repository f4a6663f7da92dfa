package controlsvc

import (
	"fmt"
	"slices"
	"strings"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// An app's origins (fleet.App.Origins) are stored and shown, but the
// control service cannot enforce them: the broker does not tell the auth
// callout a connection's Origin. What browsers are held to is the
// broker's own list of WebSocket origins (cc-control --websocket-origins),
// for every app alike. So the service says so in its log when an app's
// origins promise more than that list gives: when the list is empty (any
// page may connect), or when it leaves out an origin of the app (its
// pages cannot connect).

// originsWarning says how app's origins differ from what the broker
// enforces, or "" when they agree (or the app lists none).
func (s *Service) originsWarning(a fleet.App) string {
	if len(a.Origins) == 0 {
		return ""
	}
	list := strings.Join(a.Origins, ",")
	if s.cfg.BrokerURL != "" {
		return fmt.Sprintf("app %s lists origins %s, which the control service cannot enforce (the broker does not tell it a connection's Origin): only the broker's own WebSocket allowed origins are enforced, by browsers; make sure they name these", a.Name, list)
	}
	bc := s.cfg.Broker
	if bc.WebSocketListen == "" {
		return fmt.Sprintf("app %s lists origins %s, but the broker has no WebSocket listener: browsers cannot connect at all (cc-control --websocket-listen ADDR --websocket-origins %s)", a.Name, list, list)
	}
	if len(bc.WebSocketOrigins) == 0 {
		return fmt.Sprintf("app %s lists origins %s, but they are not enforced: the broker's WebSocket listener lets pages of ANY origin connect; restrict it with cc-control --websocket-origins %s", a.Name, list, list)
	}
	allowed := make([]string, 0, len(bc.WebSocketOrigins))
	for _, o := range bc.WebSocketOrigins {
		allowed = append(allowed, normalOrigin(o))
	}
	var missing []string
	for _, o := range a.Origins {
		if !slices.Contains(allowed, normalOrigin(o)) {
			missing = append(missing, o)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf("app %s lists origins %s that the broker's --websocket-origins (%s) does not allow: browsers on those pages cannot connect; add them there (an app's own origins are not enforced)",
		a.Name, strings.Join(missing, ","), strings.Join(bc.WebSocketOrigins, ","))
}

// normalOrigin is o as compared: scheme://host[:port], lower case,
// without a trailing slash.
func normalOrigin(o string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(o)), "/")
}

// warnOrigins logs originsWarning for each of apps.
func (s *Service) warnOrigins(apps ...fleet.App) {
	for _, a := range apps {
		if w := s.originsWarning(a); w != "" {
			s.log.Warn("an app's origins are not what browsers are held to", "app", a.Name, "detail", w)
		}
	}
}
