package controlsvc

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go/jetstream"
)

// TestKVPendingBucketBounded: pending entries live in their own bucket,
// bounded in messages and bytes, dropping its oldest when full (strangers
// make ids up at the callout's rate); the registry's bucket holds none
// and is bounded in bytes, refusing a write past it rather than dropping
// an entry.
func TestKVPendingBucketBounded(t *testing.T) {
	k := startKVBroker(t)
	r, _ := k.replica(nil)
	_, key := newUser(t)
	r.RecordPending("10.0.0.9_x", key, "10.0.0.9", "not in the registry")
	if err := r.FlushPending(); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(brokertest.Connect(t, k.b, k.keys.Control))
	if err != nil {
		t.Fatal(err)
	}
	info := func(name string) *jetstream.StreamInfo {
		s, err := js.Stream(t.Context(), "KV_"+name)
		if err != nil {
			t.Fatal(err)
		}
		i, err := s.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	p := info(PendingBucket)
	if p.Config.MaxMsgs != pendingMaxMsgs || p.Config.MaxMsgs < MaxPending || p.Config.MaxBytes != pendingMaxBytes ||
		p.Config.Discard != jetstream.DiscardOld || p.Config.MaxMsgsPerSubject != 1 {
		t.Fatalf("pending bucket: MaxMsgs %d MaxBytes %d Discard %v MaxMsgsPerSubject %d; want %d, %d, DiscardOld, 1",
			p.Config.MaxMsgs, p.Config.MaxBytes, p.Config.Discard, p.Config.MaxMsgsPerSubject, pendingMaxMsgs, pendingMaxBytes)
	}
	if p.State.Msgs != 1 {
		t.Fatalf("pending bucket holds %d messages, want the one pending entry", p.State.Msgs)
	}
	g := info(RegistryBucket)
	if g.Config.MaxBytes != RegistryMaxBytes || g.Config.Discard != jetstream.DiscardNew {
		t.Fatalf("registry bucket: MaxBytes %d Discard %v; want %d, DiscardNew", g.Config.MaxBytes, g.Config.Discard, RegistryMaxBytes)
	}
	if e, err := k.bucket(t).Get(t.Context(), entryKey(kindPending, "10.0.0.9_x")); err == nil {
		t.Fatalf("the registry bucket holds pending entry %s", e.Key())
	}
}

// TestKVPendingDroppedByBucketWrittenAgain: a pending entry the full
// bucket dropped (its message gone, no marker) is written anew at its
// next attempt, by this replica and seen by another.
func TestKVPendingDroppedByBucketWrittenAgain(t *testing.T) {
	k := startKVBroker(t)
	a, _ := k.replica(nil)
	b, _ := k.replica(nil)
	const id = "10.0.0.9_x"
	_, key := newUser(t)
	a.RecordPending(id, key, "10.0.0.9", "not in the registry")
	if err := a.FlushPending(); err != nil {
		t.Fatal(err)
	}
	// What DiscardOld does to the oldest message: gone, no marker.
	js, err := jetstream.New(brokertest.Connect(t, k.b, k.keys.Control))
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), "KV_"+PendingBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(t.Context(), jetstream.WithPurgeSubject("$KV."+PendingBucket+"."+entryKey(kindPending, id))); err != nil {
		t.Fatal(err)
	}
	a.RecordPending(id, key, "10.0.0.9", "not in the registry")
	if err := a.FlushPending(); err != nil {
		t.Fatalf("flush of an entry the bucket dropped: %v", err)
	}
	if _, err := k.bucketNamed(t, PendingBucket).Get(t.Context(), entryKey(kindPending, id)); err != nil {
		t.Fatalf("pending entry %s not written again: %v", id, err)
	}
	waitFor(t, "replica b to see the second attempt", 10*time.Second, func() bool {
		for _, p := range b.Pending() {
			if p.ID == id && p.Attempts == 2 {
				return true
			}
		}
		return false
	})
}

// TestKVWriteRefusesLongKey: a bucket key longer than maxKVKeyLen is
// refused before it is sent (the broker would close the connection the
// callout and the audit share for a subject past its control line), and
// the connection keeps working.
func TestKVWriteRefusesLongKey(t *testing.T) {
	k := startKVBroker(t)
	r, s := k.replica(nil)
	_, key := newUser(t)
	id := strings.Repeat("a", 5000)
	for _, kind := range []string{kindMachine, kindPending} {
		_, err := s.write(regChange{kind: kind, id: id, val: &fleet.Machine{ID: id, Key: key}})
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("write of a %d-byte %s key: %v, want ErrInvalid", len(entryKey(kind, id)), kind, err)
		}
	}
	if _, err := r.AddOperator("after", key, fleet.RoleViewer); err != nil {
		t.Fatalf("a registry write after the refused one: %v", err)
	}
}
