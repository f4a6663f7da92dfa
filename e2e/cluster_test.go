package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
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

// freePorts picks n loopback ports that are free now, for configurations
// that must name a port before the listener exists (routes to peers, a
// broker restarted on its port). They are chosen below the kernel's
// ephemeral range (32768 and up here), where the kernel never puts a
// listener on :0 or an outgoing connection, so the many connections a
// test opens cannot take one between this check and the listen; and never
// twice in one run.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("no %d free loopback ports found in %d-%d", n, portsLow, portsHigh)
		}
		p := portsLow + rand.IntN(portsHigh-portsLow)
		if portsGiven[p] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[p] = true
		ports = append(ports, p)
	}
	return ports
}

const portsLow, portsHigh = 20000, 32000

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// startCluster starts n brokers routed to each other on 127.0.0.1, all
// configured with the control service keys in dataDir, their routes
// authenticated by the cluster secret and mutual TLS (what
// deploy/cluster/*.json does with cc-broker --config; clients stay in
// clear text on loopback). Every broker listens for routes on a port the
// kernel picks; the first is the seed the others route to, and gossip
// completes the mesh. (Reserving ports first and releasing them for the
// brokers raced with other tests' listeners: a broker whose port was
// taken in between never became ready.)
func startCluster(t *testing.T, dataDir string, n int) []*broker.Broker {
	t.Helper()
	return startClusterWith(t, dataDir, n, nil)
}

// startClusterWith is [startCluster] with each(i, cfg) changing broker
// i's configuration (from 0) before it starts; each may be nil.
func startClusterWith(t *testing.T, dataDir string, n int, each func(i int, cfg *broker.Config)) []*broker.Broker {
	t.Helper()
	auth := stacktest.BrokerAuth(t, dataDir)
	certs := stacktest.TLSFiles(t)
	var bs []*broker.Broker
	for i := range n {
		var routes []string
		if i > 0 {
			routes = []string{bs[0].ClusterURL()}
		}
		cfg := broker.Config{
			Listen: "127.0.0.1:0", Name: fmt.Sprintf("b%d", i+1), Auth: auth,
			ClusterListen: "127.0.0.1:0", Routes: routes, ClusterSecret: clusterSecret,
			ClusterTLS:   broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA},
			PingInterval: time.Second, MaxPingsOut: stacktest.MaxPingsOut, Logger: stacktest.Logger().With("broker", i+1),
		}
		if each != nil {
			each(i, &cfg)
		}
		bs = append(bs, brokertest.StartWith(t, cfg))
	}
	waitMeshSettled(t, n, func(i int) (*server.Routez, error) {
		return bs[i].Server().Routez(&server.RoutezOptions{})
	})
	return bs
}

// clusterSecret is the route secret of the test clusters.
const clusterSecret = "cluster-secret-0123456789abcdef"

// writeClusterSecret writes clusterSecret to a 0600 file for cc-broker
// --cluster-secret-file.
func writeClusterSecret(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cluster.secret")
	if err := os.WriteFile(p, []byte(clusterSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitMeshSettled waits until each of n brokers has its full pool of
// route connections to every peer and the set of route connections has
// not changed for a second. Brokers that start together dial each other
// at once and close the duplicates; interest sent on a route that is
// about to be closed as a duplicate is lost, so tests start clients only
// once that churn is over.
func waitMeshSettled(t *testing.T, n int, routez func(i int) (*server.Routez, error)) {
	t.Helper()
	snapshot := func() (string, bool) {
		var key strings.Builder
		for i := range n {
			rz, err := routez(i)
			if err != nil {
				return "", false
			}
			perPeer := map[string]int{}
			var rids []uint64
			for _, r := range rz.Routes {
				perPeer[r.RemoteName]++
				rids = append(rids, r.Rid)
			}
			// Every peer with the same number of connections: the
			// pool (3 by default) plus the system account's own route.
			if len(perPeer) != n-1 {
				return "", false
			}
			for _, c := range perPeer {
				if c != perPeer[rz.Routes[0].RemoteName] || c < 2 {
					return "", false
				}
			}
			slices.Sort(rids)
			fmt.Fprintf(&key, "%d:%v;", i, rids)
		}
		return key.String(), true
	}
	var last string
	var since time.Time
	stacktest.WaitFor(t, "the route mesh to settle", 20*time.Second, func() bool {
		k, ok := snapshot()
		switch {
		case !ok:
			last = ""
			return false
		case k != last:
			last, since = k, time.Now()
			return false
		}
		return time.Since(since) >= time.Second
	})
}

// TestClusterOfThreeBrokers: the control service sits behind one of three
// routed brokers; agents and an operator connect to the others. The
// callout admits them across routes, presence sees all of them, calls
// cross nodes, and a machine that leaves on another node is seen leaving.
func TestClusterOfThreeBrokers(t *testing.T) {
	dir := t.TempDir()
	bs := startCluster(t, dir, 3)
	svc := controlBehind(t, dir, bs[0].ClientURL(), 5*time.Second)

	startAgentAt(t, svc, bs[1].ClientURL(), "10.1.0.2_node2", true, nil)
	a3 := startAgentAt(t, svc, bs[2].ClientURL(), "10.1.0.3_node3", true, nil)
	for _, id := range []string{"10.1.0.2_node2", "10.1.0.3_node3"} {
		stacktest.WaitFor(t, id+" ONLINE through another node", 10*time.Second, func() bool { return stacktest.Online(svc, id) })
	}

	nc := operatorConn(t, bs[2].ClientURL(), newOperator(t, svc, "ops", "admin"))
	// Direct call from node 3 to the agent on node 2.
	callLoad(t, nc, "10.1.0.2_node2", "call across nodes")
	// A broadcast reaches the agents on both other nodes.
	broadcastReaches(t, nc, 2, "broadcast across nodes")
	// The presence snapshot, asked on node 3, lists both.
	snap, err := nc.Request(fleet.PresenceSnapshotSubject, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"10.1.0.2_node2", "10.1.0.3_node3"} {
		if !strings.Contains(string(snap.Data), id) {
			t.Errorf("snapshot lacks %s: %s", id, snap.Data)
		}
	}
	// Leaving on node 3 is seen by the control service on node 1.
	events, err := nc.SubscribeSync(fleet.PresenceEventSubject("left", "10.1.0.3_node3"))
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	a3.Close()
	if _, err := events.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("no left event for node3's agent: %v", err)
	}
	if stacktest.Online(svc, "10.1.0.3_node3") {
		t.Error("node3's agent still ONLINE after it closed")
	}
}

// TestClusterConfigExamples runs deploy/cluster/broker-{1,2,3}.json with
// the real cc-broker, only their addresses moved to 127.0.0.1 ports and
// their files (certificates from a test CA, the cluster secret written
// by cc-broker cluster-secret) into the test. The routes form over
// mutual TLS with the secret; the control service sits behind broker 1,
// an agent and an operator on broker 3, all over TLS: the agent is
// admitted, ONLINE, and answers a call. A client that does not trust the
// CA is refused, and a rogue nats-server routing to broker 1 never
// routes.
func TestClusterConfigExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cc-broker")
	}
	bin := buildCCBroker(t)
	dir, etc := t.TempDir(), t.TempDir()
	stacktest.BrokerAuth(t, dir)
	if out, err := exec.Command(bin, "cluster-secret", "--secret-out", filepath.Join(etc, "cluster.secret")).CombinedOutput(); err != nil {
		t.Fatalf("cc-broker cluster-secret: %v\n%s", err, out)
	}
	certs := stacktest.TLSFiles(t)
	copyFile(t, certs.CA, filepath.Join(etc, "tls", "ca.pem"))
	for i := range 3 {
		copyFile(t, certs.Cert, filepath.Join(etc, "tls", fmt.Sprintf("cc-broker-%d.pem", i+1)))
		copyFile(t, certs.Key, filepath.Join(etc, "tls", fmt.Sprintf("cc-broker-%d-key.pem", i+1)))
	}
	client, cluster, monitor := freePorts(t, 3), freePorts(t, 3), freePorts(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 3 {
		cfg := readDeploy(t, fmt.Sprintf("cluster/broker-%d.json", i+1))
		for j := range 3 {
			cfg = strings.ReplaceAll(cfg, fmt.Sprintf("cc-broker-%d:6222", j+1), fmt.Sprintf("127.0.0.1:%d", cluster[j]))
		}
		cfg = strings.NewReplacer(
			"0.0.0.0:6222", fmt.Sprintf("127.0.0.1:%d", cluster[i]),
			"0.0.0.0:4222", fmt.Sprintf("127.0.0.1:%d", client[i]),
			"127.0.0.1:8222", fmt.Sprintf("127.0.0.1:%d", monitor[i]),
			"/etc/commandcontrol/broker-auth.json", filepath.Join(dir, controlsvc.BrokerAuthFile),
			"/etc/commandcontrol/", etc+"/",
		).Replace(cfg)
		runCCBroker(t, ctx, bin, fmt.Sprintf("broker-%d.json", i+1), cfg)
	}
	trust := nats.RootCAs(certs.CA)
	url := func(i int) string { return fmt.Sprintf("tls://127.0.0.1:%d", client[i]) }
	https := httpsClient(t, certs.CA)
	waitMeshSettled(t, 3, func(i int) (*server.Routez, error) {
		resp, err := https.Get(fmt.Sprintf("https://127.0.0.1:%d/routez", monitor[i]))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var rz server.Routez
		return &rz, json.NewDecoder(resp.Body).Decode(&rz)
	})
	svc := controlBehindRetrying(t, ctx, dir, url(0), nil, trust)
	defer svc.Close()
	startAgentWith(t, svc, agent.Config{URL: url(2), MachineID: "10.2.0.3_site3", NATSOptions: []nats.Option{trust}}, true, nil)
	stacktest.WaitFor(t, "the agent on broker 3 ONLINE", 15*time.Second, func() bool { return stacktest.Online(svc, "10.2.0.3_site3") })
	op := newOperator(t, svc, "ops", "admin")
	nc := operatorConn(t, url(1), op, trust)
	m, err := stacktest.Request(nc, "10.2.0.3_site3", "machine-info", nil, 5*time.Second)
	if err != nil || m.Header.Get(fleet.HeaderMachine) != "10.2.0.3_site3" {
		t.Fatalf("call from broker 2 to the agent on broker 3: %v %v", err, m)
	}
	// A client that does not trust the CA gets nowhere.
	kp := stacktest.LoadKey(t, op)
	if nc, err := connectAs(url(1), kp, "op-untrusting", nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("a client without the CA connected to a shipped broker")
	}
	// A rogue nats-server routing to broker 1 (no certificate, no
	// secret) never becomes a route.
	var rlog rogueLog
	rogue := startRogue(t, &rlog, fmt.Sprintf("nats-route://127.0.0.1:%d", cluster[0]))
	stacktest.WaitFor(t, "the rogue's route refused twice (or let in)", 15*time.Second, func() bool {
		return rlog.count("connection closed") >= 2 || rogue.NumRoutes() > 0
	})
	if n := rogue.NumRoutes(); n != 0 {
		t.Fatalf("the rogue has %d routes into the shipped cluster", n)
	}
	resp, err := https.Get(fmt.Sprintf("https://127.0.0.1:%d/routez", monitor[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rz server.Routez
	if err := json.NewDecoder(resp.Body).Decode(&rz); err != nil {
		t.Fatal(err)
	}
	for _, r := range rz.Routes {
		if r.RemoteName == "rogue" {
			t.Fatalf("broker 1 has a route to the rogue: %+v", r)
		}
	}
}
