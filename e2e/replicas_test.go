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
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// startReplica starts a control-service replica named name on the
// broker at url with the keys of dataDir; replicas of one deployment
// share the callout issuer, xkey and service users (copyKeys).
func startReplica(t *testing.T, dataDir, url, name string) *controlsvc.Service {
	t.Helper()
	return stacktest.StartControlWith(t, controlsvc.Config{DataDir: dataDir, BrokerURL: url, ReplicaName: name, LeaderLease: 2 * time.Second,
		ResyncInterval: 5 * time.Second, Logger: stacktest.Logger().With("side", "control", "replica", name)})
}

// copyKeys copies data directory from (its keys/ directory and admin
// key) into a new one, as a second replica is set up: the callout
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
		case !d.Type().IsRegular() || rel == controlsvc.PresenceStateFile || rel == controlsvc.RegistryFile:
			return nil // the registry is the shared bucket
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
		PingInterval: time.Second, MaxPingsOut: stacktest.MaxPingsOut, StoreDir: t.TempDir(), Logger: stacktest.Logger().With("side", "broker")})
	a := startReplica(t, dirA, b.ClientURL(), "A")
	bsvc := startReplica(t, copyKeys(t, dirA), b.ClientURL(), "B")
	if !a.Leading() || bsvc.Leading() {
		t.Fatalf("A leading %v, B leading %v: want A alone (it started first)", a.Leading(), bsvc.Leading())
	}
	// The operator and the machine are registered through A; B sees
	// them in the shared registry.
	opKey := stacktest.NewKey(t)
	stacktest.AddOperator(t, a, "ops", fleet.RoleAdmin, opKey)
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
	stacktest.RegisterKey(t, a, id, ag.PublicKey(), nil)
	stacktest.WaitFor(t, "B to see the machine and operator registered through A", 5*time.Second, func() bool {
		_, okM := bsvc.Registry().Machine(id)
		_, okO := bsvc.Registry().Operator("ops")
		return okM && okO
	})
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

// startJetStreamCluster starts n brokers routed to each other as
// [startClusterWith] does, each with a name and a store directory, on
// client and cluster ports that stay its own across a restart, each
// listing every other as a route (a JetStream cluster does not start on
// a seed broker with no route of its own): a JetStream cluster in which
// the control service's stores are replicated. The ports are
// reserved first; each(i, cfg) may change broker i's configuration. It
// returns the brokers and their configurations (to restart one on its
// store).
func startJetStreamCluster(t *testing.T, dataDir string, n int, each func(i int, cfg *broker.Config)) ([]*broker.Broker, []broker.Config) {
	t.Helper()
	auth := stacktest.BrokerAuth(t, dataDir)
	certs := stacktest.TLSFiles(t)
	ports := freePorts(t, 2*n) // cluster ports, then client ports
	var cfgs []broker.Config
	for i := range n {
		var routes []string
		for j, p := range ports {
			if j != i && j < n {
				routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(p))
			}
		}
		cfg := broker.Config{
			Listen: "127.0.0.1:" + strconv.Itoa(ports[n+i]), Name: "js" + strconv.Itoa(i+1), Auth: auth,
			ClusterListen: "127.0.0.1:" + strconv.Itoa(ports[i]), Routes: routes, ClusterSecret: clusterSecret,
			ClusterTLS:   broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA},
			PingInterval: time.Second, MaxPingsOut: stacktest.MaxPingsOut, StoreDir: t.TempDir(), Logger: stacktest.Logger().With("broker", i+1),
		}
		if each != nil {
			each(i, &cfg)
		}
		cfgs = append(cfgs, cfg)
	}
	var bs []*broker.Broker
	for _, cfg := range cfgs {
		bs = append(bs, brokertest.StartWith(t, cfg))
	}
	waitMeshSettled(t, n, func(i int) (*server.Routez, error) {
		return bs[i].Server().Routez(&server.RoutezOptions{})
	})
	return bs, cfgs
}

// TestSessionAdmittedByTheOtherReplica: two replicas on two brokers of a
// JetStream cluster of three; sessions join until B's callout admits one
// (either replica may: a queue group). A, the presence publisher,
// announces it with what B admitted (what the session declared of
// itself, which no broker event carries): B shared the admission, and A
// waited for it when the broker's connect event came first (on another
// route). Without the sharing A knows nothing of the session but its id,
// and closes it as of no app.
func TestSessionAdmittedByTheOtherReplica(t *testing.T) {
	dirA := t.TempDir()
	bs, _ := startJetStreamCluster(t, dirA, 3, nil)
	a := startReplica(t, dirA, bs[0].ClientURL(), "A")
	b := startReplica(t, copyKeys(t, dirA), bs[1].ClientURL(), "B")
	if !a.Leading() || b.Leading() {
		t.Fatalf("A leading %v, B leading %v: want A alone (it started first)", a.Leading(), b.Leading())
	}
	opKey := stacktest.NewKey(t)
	stacktest.AddOperator(t, a, "ops", fleet.RoleAdmin, opKey)
	if _, err := a.Registry().AddApp(fleet.AppRequest{Name: "demo", Functions: []string{"latencyCheck"}, Public: true}, "test"); err != nil {
		t.Fatal(err)
	}
	stacktest.WaitFor(t, "B to see the app added through A", 5*time.Second, func() bool {
		_, ok := b.Registry().App("demo")
		return ok
	})
	nc := operatorConn(t, bs[0].ClientURL(), stacktest.WriteSeed(t, "ops", stacktest.Seed(t, opKey)))
	events, err := nc.SubscribeSync(fleet.SessionEventsWildcard)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Who admitted it: each replica shares its admissions in the
	// CONTROL account, naming itself.
	ctl := stacktest.Connect(t, bs[2].ClientURL(), a.Keys().Control, "test-control")
	shared, err := ctl.SubscribeSync(controlsvc.SessionAdmittedSubject)
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.Flush(); err != nil {
		t.Fatal(err)
	}
	// Nobody but the control service can share an admission: an
	// operator (in FLEET) publishing a forged one on the same subject
	// reaches no replica (the first shared admission seen below must be
	// a real one).
	forged, _ := json.Marshal(fleet.Session{ID: "s+forgedforgedforg", App: "demo", Declared: fleet.SessionDeclared{UserAgent: "forged"}})
	if err := nc.PublishMsg(&nats.Msg{Subject: controlsvc.SessionAdmittedSubject, Header: nats.Header{controlsvc.ReplicaHeader: []string{"B"}}, Data: forged}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Sessions join until one is admitted by B (the callout is a queue
	// group: either replica may answer).
	var id string
	for i := 0; id == "" && i < 30; i++ {
		s := mustJoin(t, bs[1].ClientURL(), "demo", "", nbAddr, "latencyCheck", latency)
		m, err := shared.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("the admission of session %s was not shared: %v", s.id, err)
		}
		var sess fleet.Session
		if err := json.Unmarshal(m.Data, &sess); err != nil || sess.ID != s.id {
			t.Fatalf("shared admission %s (%v), want session %s", m.Data, err, s.id)
		}
		if m.Header.Get(controlsvc.ReplicaHeader) == "B" {
			id = s.id
		}
	}
	if id == "" {
		t.Fatal("replica B admitted none of 30 sessions")
	}
	for {
		m, err := events.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("no joined event for session %s: %v", id, err)
		}
		var ev fleet.SessionEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Session.ID != id {
			continue
		}
		if ev.Event != fleet.EventJoined || ev.Session.Declared.UserAgent != "e2e" || ev.Session.Declared.Platform != fleet.PlatformBrowser {
			t.Fatalf("session event %+v: want joined for %s with what it declared to B (user agent e2e, platform %s)", ev, id, fleet.PlatformBrowser)
		}
		break
	}
	if got := metricValue(t, b, "cc_presence_events_published_total"); got != 0 {
		t.Errorf("B published %v events; A publishes", got)
	}
}
