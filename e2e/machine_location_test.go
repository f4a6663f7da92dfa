package e2e

import (
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// A machine's entry in the presence snapshot carries the address its
// broker saw and where that is (Config.Locate).
func TestMachineSnapshotAddressAndLocation(t *testing.T) {
	svc := stacktest.StartControlWith(t, controlsvc.Config{
		DataDir: t.TempDir(),
		Broker:  broker.Config{Listen: "127.0.0.1:0"},
		Logger:  stacktest.Logger().With("side", "control"),
		Locate: func(ip string) *fleet.Location {
			if ip == "127.0.0.1" {
				return &fleet.Location{Site: "loopback", Source: fleet.LocationFromSites}
			}
			return nil
		},
	})
	startAgent(t, svc, "10.0.0.1_web01", true)
	stacktest.WaitOnline(t, svc, "10.0.0.1_web01")
	var sv fleet.Server
	stacktest.WaitFor(t, "the machine's address in the snapshot", 5*time.Second, func() bool {
		for _, s := range svc.Snapshot().Servers {
			if s.Machine == "10.0.0.1_web01" {
				sv = s
			}
		}
		return sv.IP != ""
	})
	if sv.IP != "127.0.0.1" || sv.Location == nil || sv.Location.Site != "loopback" {
		t.Fatalf("snapshot entry %+v, want 127.0.0.1 at site loopback", sv)
	}
}
