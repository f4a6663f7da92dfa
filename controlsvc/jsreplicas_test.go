package controlsvc

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestCreateReplicatedFallsBackToOne: on a broker that is not clustered,
// asking for three replicas is refused and the bucket is made with one,
// and the log says so; any other failure is returned as it is.
func TestCreateReplicatedFallsBackToOne(t *testing.T) {
	b, keys := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) { c.StoreDir = t.TempDir() }))
	nc := brokertest.Connect(t, b, keys.Control)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var asked []int
	got, err := createReplicated(log, "bucket test", func(r int) error {
		asked = append(asked, r)
		_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "test", Replicas: r})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != 1 || len(asked) != 2 || asked[0] != 3 || asked[1] != 1 {
		t.Fatalf("got %d replicas after asking %v, want 1 after asking [3 1]", got, asked)
	}
	if !strings.Contains(logs.String(), "replicas=1") || !strings.Contains(logs.String(), "non-clustered") {
		t.Errorf("the log does not say one replica and why:\n%s", logs.String())
	}
	kv, err := js.KeyValue(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas; r != 1 {
		t.Errorf("bucket replicas: got %d, want 1", r)
	}
	_, err = createReplicated(log, "bucket bad", func(r int) error {
		_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "bad bucket name", Replicas: r})
		return err
	})
	if err == nil {
		t.Fatal("an invalid bucket name was not refused")
	}
}
