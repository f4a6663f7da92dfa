package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// TestThreatRegistryBucketControlOnly: the registry lives in the KV
// bucket cc_registry of the CONTROL account, and only the control service
// reaches it. An agent, a viewer and an admin operator, each connected
// with real credentials the callout issued, may neither read nor write it:
// subscribing to $KV.cc_registry.>, putting a machine of their own
// ($KV.cc_registry.machine.*), and the JetStream API (direct get, stream
// info, a consumer) are each a permissions violation, and the bucket is
// unchanged after.
func TestThreatRegistryBucketControlOnly(t *testing.T) {
	svc := startControl(t, "")
	kv := registryBucket(t, svc)
	before := bucketKeys(t, kv)
	if len(before) == 0 {
		t.Fatal("the registry bucket is empty: the registry is not in JetStream")
	}

	agentKP, _ := nkeys.CreateUser()
	agentPub, _ := agentKP.PublicKey()
	const id = "10.0.0.1_web01"
	if _, err := svc.Registry().AddMachine(id, agentPub, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	viewerKP, _ := nkeys.FromSeed(mustRead(t, newOperator(t, svc, "vera", fleet.RoleViewer)))
	adminKP, _ := nkeys.FromSeed(mustRead(t, newOperator(t, svc, "mallory", fleet.RoleAdmin)))
	before = bucketKeys(t, kv)

	_, forgedKey := stacktestUser(t)
	forged := []byte(`{"id":"10.6.6.6_evil","key":"` + forgedKey + `","added_at":"2026-01-01T00:00:00Z"}`)
	bucketSubject := "$KV." + controlsvc.RegistryBucket
	stream := "KV_" + controlsvc.RegistryBucket
	for _, who := range []struct {
		name string
		kp   nkeys.KeyPair
	}{{id, agentKP}, {"vera", viewerKP}, {"mallory", adminKP}} {
		nc, errs := permConn(t, svc.ClientURL(), who.kp, who.name)
		steps := []struct {
			what string
			try  func() error
		}{
			{"read the bucket's changes", func() error { _, err := nc.SubscribeSync(bucketSubject + ".>"); return err }},
			{"put a machine into the bucket", func() error { return nc.Publish(bucketSubject+".machine.10=2E6=2E6=2E6_evil", forged) }},
			{"put an operator into the bucket", func() error { return nc.Publish(bucketSubject+".operator.eve", forged) }},
			{"delete an entry", func() error {
				m := nats.NewMsg(bucketSubject + ".operator.admin")
				m.Header.Set("KV-Operation", "DEL")
				return nc.PublishMsg(m)
			}},
			{"get an entry directly", func() error {
				return nc.PublishRequest("$JS.API.DIRECT.GET."+stream+"."+bucketSubject+".operator.admin", "_INBOX_cc.x.y", nil)
			}},
			{"ask for the stream", func() error { return nc.PublishRequest("$JS.API.STREAM.INFO."+stream, "_INBOX_cc.x.y", nil) }},
			{"make a consumer on it", func() error {
				return nc.PublishRequest("$JS.API.CONSUMER.CREATE."+stream, "_INBOX_cc.x.y", []byte(`{"stream_name":"`+stream+`"}`))
			}},
			{"listen to the JetStream API", func() error { _, err := nc.SubscribeSync("$JS.API.>"); return err }},
		}
		for _, s := range steps {
			if err := s.try(); err != nil {
				t.Fatalf("%s: %s: %v", who.name, s.what, err)
			}
			expectViolation(t, errs, who.name+": "+s.what)
		}
	}
	after := bucketKeys(t, kv)
	if len(after) != len(before) {
		t.Fatalf("the bucket changed: %d keys before, %d after (%v)", len(before), len(after), after)
	}
	if _, ok := svc.Registry().Machine("10.6.6.6_evil"); ok {
		t.Fatal("a forged machine is registered")
	}
	if _, ok := svc.Registry().Operator("eve"); ok {
		t.Fatal("a forged operator is registered")
	}
}

// registryBucket opens the registry bucket as the control service does
// (its CONTROL user).
func registryBucket(t *testing.T, svc *controlsvc.Service) jetstream.KeyValue {
	t.Helper()
	kp := svc.Keys().Control
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(svc.ClientURL(), nats.Nkey(pub, kp.Sign), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), controlsvc.RegistryBucket)
	if err != nil {
		t.Fatalf("the control service's account has no bucket %s: %v", controlsvc.RegistryBucket, err)
	}
	return kv
}

func bucketKeys(t *testing.T, kv jetstream.KeyValue) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	keys, err := kv.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func stacktestUser(t *testing.T) (nkeys.KeyPair, string) {
	kp := stacktest.NewKey(t)
	return kp, stacktest.Pub(t, kp)
}
