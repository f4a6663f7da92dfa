package e2e

import (
	"bufio"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
)

// startReplica starts a control-service replica named name on the
// broker at url with the keys of dataDir; replicas of one deployment
// share the callout issuer, xkey and service users (copyKeys).
func startReplica(t *testing.T, dataDir, url, name string) *controlsvc.Service {
	t.Helper()
	return stacktest.StartControlWith(t, controlsvc.Config{DataDir: dataDir, BrokerURL: url, ReplicaName: name, LeaderLease: time.Second,
		ResyncInterval: 5 * time.Second, Logger: stacktest.Logger().With("side", "control", "replica", name)})
}

// copyKeys copies data directory from (its keys/ directory, admin key,
// registry) into a new one, as a second replica is set up: the callout
// issuer, its xkey and the service users are the deployment's, shared by
// every replica.
func copyKeys(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		switch {
		case d.IsDir() && rel != "." && rel != "keys":
			return filepath.SkipDir
		case d.IsDir():
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		case !d.Type().IsRegular() || rel == controlsvc.PresenceStateFile:
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return to
}

// metricValue is the sum of the samples of metric name (any labels) that
// svc serves on /metrics.
func metricValue(t *testing.T, svc *controlsvc.Service, name string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	svc.HTTPHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	var sum float64
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// snapshotEpoch asks the presence snapshot on the shared subject and
// returns its epoch and machines.
func snapshotEpoch(t *testing.T, nc *nats.Conn) (string, []string) {
	t.Helper()
	m, err := nc.Request(fleet.PresenceSnapshotSubject, nil, 3*time.Second)
	if err != nil {
		t.Fatalf("presence snapshot: %v", err)
	}
	var snap fleet.PresenceSnapshot
	if err := json.Unmarshal(m.Data, &snap); err != nil {
		t.Fatalf("presence snapshot %s: %v", m.Data, err)
	}
	var ids []string
	for _, s := range snap.Servers {
		ids = append(ids, s.Machine)
	}
	return snap.Epoch, ids
}

// TestTwoReplicasOnePublisher: two control services on one broker with
// JetStream. Both admit and track presence; the holder of the lease (A)
// alone publishes presence events and the agents' hint, answers
// snapshots (every request on the shared subject, none lost to the other)
// and audits calls; B publishes nothing. When A goes, B takes over with a
// new epoch, and from then on it alone publishes: every event, hint and
// call record is counted once.
func TestTwoReplicasOnePublisher(t *testing.T) {
	dirA := t.TempDir()
	b := brokertest.StartWith(t, broker.Config{Listen: "127.0.0.1:0", Name: "b1", Auth: stacktest.BrokerAuth(t, dirA),
		PingInterval: time.Second, StoreDir: t.TempDir(), Logger: stacktest.Logger().With("side", "broker")})
	a := startReplica(t, dirA, b.ClientURL(), "A")
	bsvc := startReplica(t, copyKeys(t, dirA), b.ClientURL(), "B")
	if !a.Leading() || bsvc.Leading() {
		t.Fatalf("A leading %v, B leading %v: want A alone (it started first)", a.Leading(), bsvc.Leading())
	}
	// The operator and the machine are in both replicas' registries.
	opKey := stacktest.NewKey(t)
	for _, svc := range []*controlsvc.Service{a, bsvc} {
		stacktest.AddOperator(t, svc, "ops", fleet.RoleAdmin, opKey)
	}
	nc := operatorConn(t, b.ClientURL(), stacktest.WriteSeed(t, "ops", stacktest.Seed(t, opKey)))
	events, err := nc.SubscribeSync(fleet.PresenceEventsWildcard)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	const id = "10.9.0.1_replicas"
	ag := stacktest.NewAgentWith(t, agent.Config{URL: b.ClientURL(), MachineID: id, Key: stacktest.NewKey(t)})
	for _, svc := range []*controlsvc.Service{a, bsvc} {
		stacktest.RegisterKey(t, svc, id, ag.PublicKey(), nil)
	}
	stacktest.Spawn(t, ag)
	stacktest.WaitOnline(t, a, id)
	stacktest.WaitOnline(t, bsvc, id) // B has handled the connect event

	// Snapshots on the shared subject: every one answered (by A; a
	// queue group would have handed some to B, which does not answer).
	epochA, ids := snapshotEpoch(t, nc)
	for range 9 {
		if e, _ := snapshotEpoch(t, nc); e != epochA {
			t.Fatalf("snapshot epochs %q and %q from one publisher", epochA, e)
		}
	}
	if len(ids) != 1 || ids[0] != id {
		t.Fatalf("snapshot lists %v, want [%s]", ids, id)
	}
	callLoad(t, nc, id, "call while A publishes")
	stacktest.WaitFor(t, "A to audit the call and hint", 10*time.Second, func() bool {
		return metricValue(t, a, "cc_calls_total") == 1 && metricValue(t, a, "cc_agent_hints_published_total") >= 1
	})
	if got := metricValue(t, a, "cc_presence_events_published_total"); got != 1 {
		t.Errorf("A published %v events, want 1 (joined)", got)
	}
	for _, m := range []string{"cc_presence_events_published_total", "cc_calls_total", "cc_presence_publisher"} {
		if got := metricValue(t, bsvc, m); got != 0 {
			t.Errorf("B (not the publisher): %s = %v, want 0", m, got)
		}
	}

	// A goes: B takes over, with a new epoch.
	a.Close()
	stacktest.WaitFor(t, "B to take over as the presence publisher", 10*time.Second, bsvc.Leading)
	epochB, ids := snapshotEpoch(t, nc)
	if epochB == epochA || len(ids) != 1 || ids[0] != id {
		t.Fatalf("after the takeover: epoch %q (A's was %q), machines %v; want a new epoch and [%s]", epochB, epochA, ids, id)
	}
	callLoad(t, nc, id, "call after B took over")
	stacktest.WaitFor(t, "B to audit the call and hint", 10*time.Second, func() bool {
		return metricValue(t, bsvc, "cc_calls_total") >= 1 && metricValue(t, bsvc, "cc_agent_hints_published_total") >= 1
	})
	ag.Close()
	stacktest.WaitOffline(t, bsvc, id)
	// B's "left" comes after anything B published before on the same
	// connection: once it is here, a joined from B would be too.
	var got []fleet.PresenceEvent
	for len(got) == 0 || got[len(got)-1].Event != fleet.EventLeft {
		m, err := events.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("presence events so far %+v: %v", got, err)
		}
		var ev fleet.PresenceEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
	}
	if len(got) != 2 || got[0].Event != fleet.EventJoined || got[0].Epoch != epochA || got[1].Epoch != epochB {
		t.Errorf("presence events %+v: want joined (epoch %s, A's) then left (epoch %s, B's), once each", got, epochA, epochB)
	}
	for m, want := range map[string]float64{"cc_calls_total": 1, "cc_agent_hints_published_total": 1, "cc_presence_events_published_total": 1, "cc_presence_publisher": 1} {
		if got := metricValue(t, bsvc, m); got != want {
			t.Errorf("B: %s = %v, want %v (counted once, from its takeover on)", m, got, want)
		}
	}
}
