package controlsvc

import (
	"context"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/version"
)

// apiVersion answers fleet.OpVersion: this replica's build, its name and
// since when it serves the control API. Any operator may ask (it is in
// fleet.ReadOnlyOps); the body is ignored.
func (s *Service) apiVersion(_ context.Context, _ operatorIdentity, _ []byte) (any, error) {
	v := version.Get()
	return fleet.ControlVersion{Version: v.Version, Commit: v.Commit, Modified: v.Modified, Go: v.Go,
		Replica: s.cfg.ReplicaName, Started: s.started}, nil
}
