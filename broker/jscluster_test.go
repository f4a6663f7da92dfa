package broker_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/nats-io/nats.go/jetstream"
)

// startJetStreamCluster starts three brokers routed to each other, each
// with a store directory and a name: a JetStream cluster. Every broker
// lists the other two as routes (a JetStream cluster refuses to start on
// a seed broker with no route configured), so the cluster ports are
// reserved first.
func startJetStreamCluster(t *testing.T, keys *brokertest.Keys) []*broker.Broker {
	t.Helper()
	var bs []*broker.Broker
	for _, cfg := range jetStreamClusterConfigs(t, keys) {
		bs = append(bs, brokertest.StartWith(t, cfg))
	}
	return bs
}

// jetStreamClusterConfigs are the configurations startJetStreamCluster
// starts (again, to restart a broker with its store).
func jetStreamClusterConfigs(t *testing.T, keys *brokertest.Keys) []broker.Config {
	t.Helper()
	var ports []int
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		l.Close()
	}
	var cfgs []broker.Config
	for i := range 3 {
		var routes []string
		for j, p := range ports {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
			}
		}
		cfgs = append(cfgs, broker.Config{Listen: "127.0.0.1:0", Name: fmt.Sprintf("js%d", i+1), Auth: keys.Auth(),
			ClusterListen: fmt.Sprintf("127.0.0.1:%d", ports[i]), Routes: routes, ClusterSecret: "js-cluster-secret-0123456789",
			StoreDir: t.TempDir()})
	}
	return cfgs
}

// TestClusteredJetStreamForControlAccount: three routed brokers with
// store directories form a JetStream cluster in which the control user
// creates a KV bucket with three replicas (the registry's and the
// leader lease's kind); FLEET has no JetStream on any of them. When the
// broker leading the bucket's stream dies, writes resume through the
// others once a new leader is elected, and every write acknowledged
// before or after is there.
func TestClusteredJetStreamForControlAccount(t *testing.T) {
	keys := brokertest.NewKeys(t)
	bs := startJetStreamCluster(t, keys)
	for _, b := range bs {
		fl, err := b.Server().LookupAccount(broker.FleetAccount)
		if err != nil {
			t.Fatal(err)
		}
		if fl.JetStreamEnabled() {
			t.Errorf("broker %s: the FLEET account has JetStream", b.Server().Name())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	js, err := jetstream.New(brokertest.Connect(t, bs[0], keys.Control))
	if err != nil {
		t.Fatal(err)
	}
	// The cluster elects its meta leader first: until then creating
	// fails (times out); ask again until it is there.
	var kv jetstream.KeyValue
	waitUntil(t, ctx, "an R3 KV bucket in the CONTROL account", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		defer ccancel()
		kv, err = js.CreateKeyValue(cctx, jetstream.KeyValueConfig{Bucket: "cc_test", Replicas: 3, Storage: jetstream.FileStorage})
		return err == nil
	})
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ci := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Cluster
	if ci == nil || len(ci.Replicas) != 2 || ci.Leader == "" {
		t.Fatalf("bucket not replicated on three brokers: %+v", ci)
	}
	acked := map[string]string{}
	put := func(kv jetstream.KeyValue, i int) error {
		k, v := fmt.Sprintf("k%03d", i), fmt.Sprintf("v%d", i)
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		if _, err := kv.Put(pctx, k, []byte(v)); err != nil {
			return err
		}
		acked[k] = v
		return nil
	}
	for i := range 50 {
		if err := put(kv, i); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	// Kill the broker leading the stream; write through a survivor.
	var survivor *broker.Broker
	for _, b := range bs {
		if b.Server().Name() == ci.Leader {
			b.Shutdown()
		} else if survivor == nil {
			survivor = b
		}
	}
	js2, err := jetstream.New(brokertest.Connect(t, survivor, keys.Control))
	if err != nil {
		t.Fatal(err)
	}
	var kv2 jetstream.KeyValue
	i := 50
	waitUntil(t, ctx, "writes to resume after the stream leader died", func() bool {
		if kv2 == nil {
			cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
			defer ccancel()
			if kv2, err = js2.KeyValue(cctx, "cc_test"); err != nil {
				kv2 = nil
				return false
			}
		}
		if put(kv2, i) != nil {
			return false
		}
		i++
		return true
	})
	for range 50 {
		if err := put(kv2, i); err != nil {
			t.Fatalf("put %d after the election: %v", i, err)
		}
		i++
	}
	for k, v := range acked {
		e, err := kv2.Get(ctx, k)
		if err != nil || string(e.Value()) != v {
			t.Fatalf("acknowledged %s=%s lost after the leader died: %v", k, v, err)
		}
	}
	st2, err := kv2.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if nl := st2.(*jetstream.KeyValueBucketStatus).StreamInfo().Cluster.Leader; nl == ci.Leader || nl == "" {
		t.Fatalf("stream leader after %s died: %q", ci.Leader, nl)
	}
}

// waitUntil polls cond until it holds or ctx ends.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	defer func() { t.Logf("%s after %v", what, time.Since(start).Round(time.Millisecond)) }()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestClusteredJetStreamSurvivesRestartOfAll: the three brokers stop and
// start again on their store directories; the CONTROL account's bucket
// is there with what was written, and takes writes again. (The CONTROL
// account gets JetStream once its broker has started: the streams the
// cluster's meta layer recovers find it.)
func TestClusteredJetStreamSurvivesRestartOfAll(t *testing.T) {
	keys := brokertest.NewKeys(t)
	cfgs := jetStreamClusterConfigs(t, keys)
	var bs []*broker.Broker
	for _, c := range cfgs {
		bs = append(bs, brokertest.StartWith(t, c))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	js, err := jetstream.New(brokertest.Connect(t, bs[0], keys.Control))
	if err != nil {
		t.Fatal(err)
	}
	var kv jetstream.KeyValue
	waitUntil(t, ctx, "an R3 KV bucket in the CONTROL account", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		defer ccancel()
		kv, err = js.CreateKeyValue(cctx, jetstream.KeyValueConfig{Bucket: "cc_test", Replicas: 3, Storage: jetstream.FileStorage})
		return err == nil
	})
	for i := range 20 {
		if _, err := kv.Put(ctx, fmt.Sprintf("k%d", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range bs {
		b.Shutdown()
	}
	bs = bs[:0]
	for _, c := range cfgs {
		bs = append(bs, brokertest.StartWith(t, c))
	}
	js2, err := jetstream.New(brokertest.Connect(t, bs[1], keys.Control))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, ctx, "the bucket to take writes after all three restarted", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		defer ccancel()
		kv2, err := js2.KeyValue(cctx, "cc_test")
		if err != nil {
			return false
		}
		_, err = kv2.Put(cctx, "after", []byte("x"))
		kv = kv2
		return err == nil
	})
	for i := range 20 {
		e, err := kv.Get(ctx, fmt.Sprintf("k%d", i))
		if err != nil || string(e.Value()) != fmt.Sprint(i) {
			t.Fatalf("k%d after the restart: %v", i, err)
		}
	}
}
