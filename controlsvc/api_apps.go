package controlsvc

import (
	"context"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// adminReadOps are control operations only an admin may use that change
// nothing: they are neither audited nor logged as registry changes.
var adminReadOps = map[string]bool{fleet.OpAppsList: true, fleet.OpRegistryExport: true}

// apiAppsAdd answers OpAppsAdd: the app as registered and, for a signed
// app, its signing key's seed (shown this once).
func (s *Service) apiAppsAdd(_ context.Context, op operatorIdentity, body []byte) (any, error) {
	var r fleet.AppRequest
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	created, err := s.reg.AddApp(r, op.Name)
	if err == nil {
		s.warnOrigins(created.App)
	}
	return created, err
}

// apiAppsList answers OpAppsList: the apps with their ONLINE sessions.
func (s *Service) apiAppsList(_ context.Context, _ operatorIdentity, _ []byte) (any, error) {
	apps := s.reg.Apps()
	g := s.sessionGate()
	for i := range apps {
		apps[i].Online = g.connectedOf(apps[i].Name)
	}
	return apps, nil
}

// apiAppsRemove answers OpAppsRemove: the app is removed from the
// registry first (its sessions are refused from then on), then its live
// sessions are closed.
func (s *Service) apiAppsRemove(ctx context.Context, _ operatorIdentity, body []byte) (any, error) {
	var r fleet.AppRequest
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	if _, err := s.reg.RemoveApp(r.Name); err != nil {
		return nil, err
	}
	return fleet.AppRemoved{Name: r.Name, Closed: s.sessionGate().closeApp(ctx, r.Name)}, nil
}

// sessionGate is the session presence the service was given, or one
// that knows no session.
func (s *Service) sessionGate() sessionGate {
	if s.sessions == nil {
		return noSessions{}
	}
	return s.sessions
}
