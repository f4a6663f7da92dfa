package e2e

import (
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestTwoReplicasOneNameTwoPublishers: the presence lease's value is the
// replica's name, and a replica that finds the lease holding its own name
// takes it over at once ("restarted under the same --replica-name").
// Two live replicas given one name — a copied unit file or compose
// service, or the default <host>-<pid> of two containers sharing the
// host's network and hostname, both pid 1 — take the lease from each
// other at every try: each holds it until its next renewal fails, so both
// publish presence events, snapshots, hints and the call audit at once,
// each taking a new epoch at every turn (watchers resync again and
// again); and each ignores the other's shared session admissions as its
// own. A second live holder of a name must be told apart (a random
// instance id in the lease beside the name) and refused or made to wait.
func TestTwoReplicasOneNameTwoPublishers(t *testing.T) {
	dirA := t.TempDir()
	b := brokertest.StartWith(t, broker.Config{Listen: "127.0.0.1:0", Name: "b1", Auth: stacktest.BrokerAuth(t, dirA),
		PingInterval: time.Second, StoreDir: t.TempDir(), Logger: stacktest.Logger().With("side", "broker")})
	a := startReplica(t, dirA, b.ClientURL(), "ctl")
	bsvc := startReplica(t, copyKeys(t, dirA), b.ClientURL(), "ctl")
	both, flips := 0, 0
	lastA := a.Leading()
	deadline := time.Now().Add(6 * time.Second) // three leases
	for time.Now().Before(deadline) {
		la, lb := a.Leading(), bsvc.Leading()
		if la && lb {
			both++
		}
		if la != lastA {
			flips++
			lastA = la
		}
		time.Sleep(10 * time.Millisecond) // sample both replicas' state
	}
	if both > 0 || flips > 1 {
		t.Fatalf("two live replicas named alike: both were the presence publisher in %d samples of 10 ms, and the lease changed "+
			"hands %d times in 6 s", both, flips)
	}
}
