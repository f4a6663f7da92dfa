package controlsvc

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// BenchmarkRegistryWrite measures an accept (a pending machine
// registered) and a removal on a registry of 1,000 and 50,000 machines,
// kept in the registry file (rewritten whole on every change) and in the
// KV bucket (one entry written), in the same run:
//
//	go test -run '^$' -bench BenchmarkRegistryWrite -benchtime 50x ./controlsvc/
func BenchmarkRegistryWrite(b *testing.B) {
	for _, store := range []string{"file", "kv"} {
		for _, n := range []int{1000, 50000} {
			b.Run(fmt.Sprintf("%s/machines=%d", store, n), func(b *testing.B) {
				r := benchRegistry(b, store, n)
				_, key := newUser(b)
				added, removed := 0, 0 // across the runs of each sub-benchmark
				b.Run("accept", func(b *testing.B) {
					for range b.N {
						id := fmt.Sprintf("new%07d", added)
						added++
						r.RecordPending(id, key, "10.0.0.1", "not in the registry")
						if _, err := r.Accept(id, "", "bench"); err != nil {
							b.Fatal(err)
						}
					}
				})
				b.Run("rm", func(b *testing.B) {
					if removed+b.N > n {
						b.Fatalf("-benchtime %dx removes more than the %d machines there are", b.N, n)
					}
					for range b.N {
						if err := r.RemoveMachine(benchID(removed)); err != nil {
							b.Fatal(err)
						}
						removed++
					}
				})
			})
		}
	}
}

func benchID(i int) string { return fmt.Sprintf("10.%d.%d.%d_m%d", i>>16&255, i>>8&255, i&255, i) }

// benchRegistry is a registry of n machines in store ("file" or "kv").
func benchRegistry(b *testing.B, store string, n int) *Registry {
	b.Helper()
	ms := make(map[string]*fleet.Machine, n)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		id := benchID(i)
		ms[id] = &fleet.Machine{ID: id, Key: pub, Labels: map[string]string{"role": "web", "dc": "nb"}, AddedAt: t0, AddedBy: "bench"}
	}
	if store == "file" {
		r, err := OpenRegistry(filepath.Join(b.TempDir(), RegistryFile))
		if err != nil {
			b.Fatal(err)
		}
		r.mu.Lock()
		r.data.Machines = ms
		err = r.saveLocked()
		r.mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	k := startKVBroker(b)
	k.replica(nil) // makes the bucket
	nc, js := k.js(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var acks []jetstream.PubAckFuture
	wait := func() {
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			b.Fatal("filling the bucket took more than a minute")
		}
		for _, f := range acks {
			select {
			case err := <-f.Err():
				b.Fatal(err)
			default:
			}
		}
		acks = acks[:0]
	}
	for id, m := range ms {
		v, _ := json.Marshal(m)
		f, err := js.PublishMsgAsync(&nats.Msg{Subject: "$KV." + RegistryBucket + "." + entryKey(kindMachine, id), Data: v})
		if err != nil {
			b.Fatal(err)
		}
		if acks = append(acks, f); len(acks) == 1000 {
			wait()
		}
	}
	wait()
	nc.Close()
	r, _ := k.replica(nil)
	if got := len(r.Machines()); got != n {
		b.Fatalf("the replica loaded %d machines, want %d", got, n)
	}
	return r
}

// js is a JetStream context on the broker, as the CONTROL user.
func (k *kvBroker) js(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	pub, _ := k.keys.Control.PublicKey()
	nc, err := nats.Connect(k.b.ClientURL(), nats.Nkey(pub, k.keys.Control.Sign))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
