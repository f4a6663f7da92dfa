package controlsvc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go/jetstream"
)

// kvBroker is a real broker with JetStream (a temporary store), and a way
// to open registry replicas on it, each on its own CONTROL connection.
type kvBroker struct {
	t    testing.TB
	b    *broker.Broker
	keys *brokertest.Keys
	dir  string // a data directory (where registry.json would be)
}

func startKVBroker(t testing.TB) *kvBroker {
	t.Helper()
	store := t.TempDir()
	b, keys := brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) { c.StoreDir = store }))
	return &kvBroker{t: t, b: b, keys: keys, dir: t.TempDir()}
}

// replica opens a registry on the bucket, as a control-service replica
// does, logging to log (nil: nowhere).
func (k *kvBroker) replica(log *slog.Logger) (*Registry, *kvStore) {
	k.t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nc := brokertest.Connect(k.t, k.b, k.keys.Control)
	r := newRegistry(time.Now)
	r.path = filepath.Join(k.dir, RegistryFile)
	s, err := r.attachKV(context.Background(), nc, log)
	if err != nil {
		k.t.Fatal(err)
	}
	k.t.Cleanup(s.close)
	return r, s
}

func TestEntryKeyEncoding(t *testing.T) {
	for _, id := range []string{"10.0.0.5_web01", "web01", "a b/c*>", "Ünïcode", "x=3D", "-_"} {
		key := entryKey(kindMachine, id)
		if !strings.HasPrefix(key, "machine.") || strings.Count(key, ".") != 1 {
			t.Errorf("entryKey(%q) = %q, want one token after machine.", id, key)
		}
		kind, got, err := parseEntryKey(key)
		if err != nil || kind != kindMachine || got != id {
			t.Errorf("parseEntryKey(%q) = %q, %q, %v; want machine, %q", key, kind, got, err, id)
		}
	}
	for _, bad := range []string{"machine", "machine.", "machine.a=4", "machine.a=ZZ"} {
		if _, _, err := parseEntryKey(bad); err == nil {
			t.Errorf("parseEntryKey(%q) accepted a malformed key", bad)
		}
	}
}

// TestKVRegistryPersists: what one replica writes (machines, labels,
// operators, apps, pending entries) is what a replica opened afterwards
// loads from the bucket.
func TestKVRegistryPersists(t *testing.T) {
	k := startKVBroker(t)
	r, _ := k.replica(nil)
	_, mkey := newUser(t)
	_, okey := newUser(t)
	_, pkey := newUser(t)
	if _, err := r.AddMachine("10.0.0.1_web01", mkey, map[string]string{"role": "web"}, "admin", false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Label("10.0.0.1_web01", map[string]string{"dc": "nb"}, []string{"role"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddOperator("alice", okey, fleet.RoleViewer); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddApp(fleet.AppRequest{Name: "latency", Functions: []string{"latencyCheck"}, Public: true}, "admin"); err != nil {
		t.Fatal(err)
	}
	r.RecordPending("10.0.0.9_new", pkey, "10.0.0.9", "not in the registry")
	if err := r.FlushPending(); err != nil {
		t.Fatal(err)
	}
	r2, _ := k.replica(nil)
	if got, want := r2.Machines(), r.Machines(); !reflect.DeepEqual(got, want) {
		t.Errorf("machines:\n got %+v\nwant %+v", got, want)
	}
	if got, want := r2.Operators(), r.Operators(); !reflect.DeepEqual(got, want) {
		t.Errorf("operators:\n got %+v\nwant %+v", got, want)
	}
	if got, want := r2.Apps(), r.Apps(); !reflect.DeepEqual(got, want) {
		t.Errorf("apps:\n got %+v\nwant %+v", got, want)
	}
	if got, want := r2.Pending(), r.Pending(); !reflect.DeepEqual(got, want) {
		t.Errorf("pending:\n got %+v\nwant %+v", got, want)
	}
	if err := r.RemoveMachine("10.0.0.1_web01"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.RemoveOperator("alice"); err != nil {
		t.Fatal(err)
	}
	r3, _ := k.replica(nil)
	if _, ok := r3.Machine("10.0.0.1_web01"); ok {
		t.Error("a removed machine is loaded again")
	}
	if _, ok := r3.Operator("alice"); ok {
		t.Error("a removed operator is loaded again")
	}
}

// TestKVReplicasSeeEachOther: an accept through replica A admits the
// machine at replica B (B's memory, what its callout reads) within
// milliseconds, and a removal through B takes it away at A; remote sites
// hear of it at both.
func TestKVReplicasSeeEachOther(t *testing.T) {
	k := startKVBroker(t)
	a, _ := k.replica(nil)
	b, _ := k.replica(nil)
	var mu sync.Mutex
	var sitesB []string
	b.mu.Lock()
	b.onSites = func(s ...string) { mu.Lock(); sitesB = append(sitesB, s...); mu.Unlock() }
	b.mu.Unlock()
	_, key := newUser(t)
	a.RecordPendingAt("10.2.0.1_dc2-web", key, "10.2.0.1", "dc2", "not in the registry")
	if _, err := a.AcceptAt("10.2.0.1_dc2-web", "", "dc2", "admin"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "replica B to admit the machine", 5*time.Second, func() bool { m, ok := b.Machine("10.2.0.1_dc2-web"); return ok && m.Key == key })
	t.Logf("accept at A visible at B after %v", time.Since(start))
	mu.Lock()
	if !reflect.DeepEqual(sitesB, []string{"dc2"}) {
		t.Errorf("B's site hook: got %v, want [dc2]", sitesB)
	}
	mu.Unlock()
	if err := b.RemoveMachine("10.2.0.1_dc2-web"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "replica A to forget the machine", 5*time.Second, func() bool { _, ok := a.Machine("10.2.0.1_dc2-web"); return !ok })
	if n := len(a.Pending()); n != 0 {
		t.Errorf("A lists %d pending entries after the accept and removal, want 0", n)
	}
}

// TestKVAcceptReadsPendingFromBucket: a machine that knocked at replica B
// can be accepted through replica A even before A's watcher delivered
// B's pending entry: A reads it from the bucket. (A's watcher is stopped
// here, so only the read can find it.)
func TestKVAcceptReadsPendingFromBucket(t *testing.T) {
	k := startKVBroker(t)
	a, as := k.replica(nil)
	as.close() // A hears nothing more from the watcher
	b, _ := k.replica(nil)
	_, key := newUser(t)
	b.RecordPending("10.0.0.7_new", key, "10.0.0.7", "not in the registry")
	if err := b.FlushPending(); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Machine("10.0.0.7_new"); ok || len(a.Pending()) != 0 {
		t.Fatal("A's memory already holds the entry: the test proves nothing")
	}
	c, err := a.Accept("10.0.0.7_new", "", "admin")
	if err != nil {
		t.Fatalf("accept through A of a machine pending at B: %v", err)
	}
	if c.Key != key {
		t.Fatalf("accepted key %s, want %s", c.Key, key)
	}
	if _, err := a.Accept("10.0.0.8_nobody", "", "admin"); fleet.CodeOf(mapRegistryError(err)) != fleet.CodeNotFound {
		t.Fatalf("accept of an id pending nowhere: got %v, want not found", err)
	}
}

// TestKVNoLostUpdate: two replicas labelling the same machine at once,
// each writing on the revision it read, lose none of each other's labels:
// a write on a stale revision is refused by the bucket, the entry read
// again and the change made on it.
func TestKVNoLostUpdate(t *testing.T) {
	k := startKVBroker(t)
	a, _ := k.replica(nil)
	b, _ := k.replica(nil)
	_, key := newUser(t)
	if _, err := a.AddMachine("web01", key, nil, "admin", false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B to see web01", 5*time.Second, func() bool { _, ok := b.Machine("web01"); return ok })
	const n = 30
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for _, r := range []struct {
		reg    *Registry
		prefix string
	}{{a, "a"}, {b, "b"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if _, err := r.reg.Label("web01", map[string]string{fmt.Sprintf("%s%d", r.prefix, i): "x"}, nil); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, r := range []*Registry{a, b} {
		waitFor(t, "both replicas to hold every label", 5*time.Second, func() bool { return len(r.Labels("web01")) == 2*n })
	}
	fresh, _ := k.replica(nil)
	if got := len(fresh.Labels("web01")); got != 2*n {
		t.Fatalf("the bucket holds %d labels, want %d: updates were lost", got, 2*n)
	}
}

// TestKVConcurrentAddOneWins: the same machine added at once through two
// replicas, with different keys, is registered once: the second add finds
// the first (compare-and-set on "absent") and is refused as existing.
func TestKVConcurrentAddOneWins(t *testing.T) {
	k := startKVBroker(t)
	a, _ := k.replica(nil)
	b, bs := k.replica(nil)
	bs.close() // B hears nothing of A's add: only the bucket can refuse B's
	_, ka := newUser(t)
	_, kb := newUser(t)
	if _, err := a.AddMachine("web01", ka, nil, "admin", false); err != nil {
		t.Fatal(err)
	}
	_, err := b.AddMachine("web01", kb, nil, "admin", false)
	if fleet.CodeOf(mapRegistryError(err)) != fleet.CodeConflict {
		t.Fatalf("second add of web01 with another key: got %v, want a conflict", err)
	}
	if m, _ := b.Machine("web01"); m.Key != ka {
		t.Fatalf("B holds key %s, want the first add's %s", m.Key, ka)
	}
}

// TestKVPendingCoalescedAndMerged: attempts are counted in memory and
// written shortly after, not on every attempt; two replicas recording
// the same id (with different keys) end with both keys in the bucket.
func TestKVPendingCoalescedAndMerged(t *testing.T) {
	k := startKVBroker(t)
	a, _ := k.replica(nil)
	b, _ := k.replica(nil)
	_, ka := newUser(t)
	_, kb := newUser(t)
	for range 100 {
		a.RecordPending("10.0.0.9_x", ka, "10.0.0.9", "not in the registry")
	}
	b.RecordPending("10.0.0.9_x", kb, "10.0.0.10", "not in the registry")
	if err := a.FlushPending(); err != nil {
		t.Fatal(err)
	}
	if err := b.FlushPending(); err != nil {
		t.Fatal(err)
	}
	st, err := k.bucketNamed(t, PendingBucket).Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Values(); got > 3 {
		t.Errorf("100 attempts made %d writes to the bucket, want them coalesced (at most 3)", got)
	}
	fresh, _ := k.replica(nil)
	ps := fresh.Pending()
	if len(ps) != 1 || len(ps[0].Keys) != 2 || !ps[0].MultipleKeys {
		t.Fatalf("bucket's pending entry: %+v; want one entry with both keys", ps)
	}
}

// bucket opens the registry bucket directly.
func (k *kvBroker) bucket(t testing.TB) jetstream.KeyValue {
	t.Helper()
	return k.bucketNamed(t, RegistryBucket)
}

// bucketNamed opens bucket name directly.
func (k *kvBroker) bucketNamed(t testing.TB, name string) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(brokertest.Connect(t, k.b, k.keys.Control))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestKVImportsRegistryFile: the first start on an empty bucket imports
// registry.json (kept, unchanged), records it in meta.import and says so;
// a later start does not import it again, and entries written since stay.
func TestKVImportsRegistryFile(t *testing.T) {
	k := startKVBroker(t)
	path := filepath.Join(k.dir, RegistryFile)
	old, err := OpenRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	_, mkey := newUser(t)
	_, okey := newUser(t)
	_, pkey := newUser(t)
	if _, err := old.AddMachine("10.0.0.1_web01", mkey, map[string]string{"role": "web"}, "admin", false); err != nil {
		t.Fatal(err)
	}
	if _, err := old.AddOperator("admin", okey, fleet.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	old.RecordPending("10.0.0.9_new", pkey, "10.0.0.9", "not in the registry")
	if err := old.FlushPending(); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	r, s := k.replica(log)
	if err := r.importFile(t.Context(), s, log); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r.Machines(), old.Machines()) || !reflect.DeepEqual(r.Operators(), old.Operators()) || len(r.Pending()) != 1 {
		t.Fatalf("imported registry differs: machines %+v operators %+v pending %+v", r.Machines(), r.Operators(), r.Pending())
	}
	if !strings.Contains(logs.String(), "imported 1 machines, 1 operators, 1 pending machines and 0 apps from "+path+" (kept as a backup)") {
		t.Errorf("the log does not say what was imported:\n%s", logs.String())
	}
	after, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(before, after) {
		t.Fatalf("registry.json was changed or removed by the import (%v)", err)
	}
	e, err := k.bucket(t).Get(t.Context(), metaImportKey)
	if err != nil {
		t.Fatal(err)
	}
	var meta importMeta
	if err := json.Unmarshal(e.Value(), &meta); err != nil || meta.State != "done" || meta.Machines != 1 || meta.File != path {
		t.Fatalf("meta.import: %s (%v)", e.Value(), err)
	}
	if err := r.RemoveMachine("10.0.0.1_web01"); err != nil {
		t.Fatal(err)
	}
	r2, s2 := k.replica(nil)
	if err := r2.importFile(t.Context(), s2, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, ok := r2.Machine("10.0.0.1_web01"); ok {
		t.Fatal("a second start imported registry.json again (the removed machine is back)")
	}
}

// TestKVImportResumes: a start that stopped part-way through the import
// (meta.import says "importing") goes on with it at the next start.
func TestKVImportResumes(t *testing.T) {
	k := startKVBroker(t)
	path := filepath.Join(k.dir, RegistryFile)
	old, err := OpenRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		_, key := newUser(t)
		if _, err := old.AddMachine(fmt.Sprintf("m%d", i), key, nil, "admin", false); err != nil {
			t.Fatal(err)
		}
	}
	k.replica(nil) // makes the bucket
	kv := k.bucket(t)
	b, _ := json.Marshal(importMeta{State: "importing", File: path})
	if _, err := kv.Create(t.Context(), metaImportKey, b); err != nil {
		t.Fatal(err)
	}
	m0, _ := old.Machine("m0")
	v, _ := json.Marshal(m0)
	if _, err := kv.Create(t.Context(), entryKey(kindMachine, "m0"), v); err != nil {
		t.Fatal(err)
	}
	r, s := k.replica(nil)
	if err := r.importFile(t.Context(), s, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if got := len(r.Machines()); got != 3 {
		t.Fatalf("after resuming: %d machines, want 3", got)
	}
}

// TestServiceRegistryStore: the service keeps its registry in the bucket
// when its broker has JetStream (the embedded default), and in the file
// with a warning that replicas need JetStream when it has none.
func TestServiceRegistryStore(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	svc, err := New(Config{DataDir: t.TempDir(), Broker: broker.Config{Listen: "127.0.0.1:0"}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !svc.reg.inBucket() || len(svc.reg.Operators()) != 1 {
		t.Fatalf("embedded broker: in bucket %v, operators %v; want the bucket and the first admin", svc.reg.inBucket(), svc.reg.Operators())
	}
	svc.Close()

	data := t.TempDir()
	keys, err := LoadOrCreateKeys(data)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := keys.BrokerAuth()
	if err != nil {
		t.Fatal(err)
	}
	b := brokertest.StartWith(t, broker.Config{Listen: "127.0.0.1:0", Auth: auth}) // no JetStream
	logs.Reset()
	svc, err = New(Config{DataDir: data, BrokerURL: b.ClientURL(), Audit: AuditConfig{NotDurable: true}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if svc.reg.inBucket() || !svc.reg.file {
		t.Fatal("a broker without JetStream: the registry is not in the file")
	}
	if !strings.Contains(logs.String(), "replicas cannot share it") {
		t.Errorf("no warning that replicas need JetStream:\n%s", logs.String())
	}
	if _, err := os.Stat(filepath.Join(data, RegistryFile)); err != nil {
		t.Errorf("the file store wrote no registry.json: %v", err)
	}
}

// TestKVPendingFlushStopsWhenUnreachable: with the bucket out of reach a
// flush stops at its first failure (each write would wait as long) and
// every entry stays marked for the next flush.
func TestKVPendingFlushStopsWhenUnreachable(t *testing.T) {
	k := startKVBroker(t)
	r, _ := k.replica(nil)
	_, key := newUser(t)
	for i := range 600 {
		r.RecordPending(fmt.Sprintf("10.0.%d.%d_x", i/256, i%256), key, "10.0.0.1", "not in the registry")
	}
	k.b.Shutdown()
	err := r.FlushPending()
	if err == nil || !strings.Contains(err.Error(), "left for the next flush") {
		t.Fatalf("flush with the broker gone: got %v, want a failure saying what is left", err)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if got := len(r.dirtyPending); got != 600 {
		t.Fatalf("%d entries marked for the next flush, want 600", got)
	}
}

// TestKVImportPipelined: an import writes its machines pipelined, and a
// machine another replica changed meanwhile (this replica's memory is a
// revision behind: its watch is stopped) or named twice in the import is
// written again on its own, compare-and-set, so nothing is lost: the
// bucket ends with every machine, the later of two entries for one id,
// and the other replica's change overwritten only by a write that read
// it.
func TestKVImportPipelined(t *testing.T) {
	k := startKVBroker(t)
	a, sa := k.replica(nil)
	b, _ := k.replica(nil)
	_, key0 := newUser(t)
	if _, err := a.AddMachine("10.3.0.1_m0", key0, nil, "test", false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B to hold m0", 5*time.Second, func() bool { _, ok := b.Machine("10.3.0.1_m0"); return ok })
	sa.close() // A no longer sees B's changes
	if _, err := b.Label("10.3.0.1_m0", map[string]string{"by": "b"}, nil); err != nil {
		t.Fatal(err)
	}
	var reqs []fleet.MachineRequest
	for i := range 1200 {
		_, key := newUser(t)
		reqs = append(reqs, fleet.MachineRequest{ID: fmt.Sprintf("10.3.%d.%d_m%d", i/200+1, i%200+1, i), Key: key})
	}
	_, keyDup := newUser(t)
	reqs = append(reqs, fleet.MachineRequest{ID: "10.3.0.1_m0", Key: key0, Labels: map[string]string{"by": "import"}},
		fleet.MachineRequest{ID: "10.3.1.1_m0", Key: keyDup, Labels: map[string]string{"dup": "last"}})
	n, _, err := a.ImportMachines(reqs, "test")
	if err != nil || n != len(reqs) {
		t.Fatalf("import: %d of %d, %v", n, len(reqs), err)
	}
	// The import has returned: every write is acknowledged, B sees them
	// once its watch delivers them.
	waitFor(t, "B to hold every imported machine", 10*time.Second, func() bool {
		m, _ := b.Machine("10.3.0.1_m0")
		return len(b.Machines()) == 1201 && m.Labels["by"] == "import"
	})
	if m, _ := b.Machine("10.3.1.1_m0"); m.Key != keyDup || m.Labels["dup"] != "last" {
		t.Errorf("an id named twice: %+v, want the later entry", m)
	}
	if m, _ := b.Machine("10.3.0.1_m0"); m.Labels["by"] != "import" {
		t.Errorf("the machine B relabelled: %+v, want the import's entry written over B's change", m)
	}
}
