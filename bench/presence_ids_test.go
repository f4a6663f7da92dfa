package bench

import (
	"reflect"
	"testing"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// TestKeepIDs: asked for ids, a part of ids keeps them, and a whole
// snapshot (from a control service that predates the request) gives
// its servers' ids; asked for the whole snapshot, ids are dropped.
func TestKeepIDs(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   fleet.PresenceSnapshot
		ids  bool
		want fleet.PresenceSnapshot
	}{
		{"ids answered", fleet.PresenceSnapshot{Seq: 3, Machines: []string{"a", "b"}}, true,
			fleet.PresenceSnapshot{Seq: 3, Machines: []string{"a", "b"}}},
		{"older service", fleet.PresenceSnapshot{Seq: 3, Servers: []fleet.Server{{Machine: "a"}, {Machine: "b"}}}, true,
			fleet.PresenceSnapshot{Seq: 3, Machines: []string{"a", "b"}}},
		{"whole snapshot asked", fleet.PresenceSnapshot{Seq: 3, Servers: []fleet.Server{{Machine: "a"}}, Machines: []string{"x"}}, false,
			fleet.PresenceSnapshot{Seq: 3, Servers: []fleet.Server{{Machine: "a"}}}},
	} {
		got := tt.in
		keepIDs(&got, tt.ids)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
