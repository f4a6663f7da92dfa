package controlsvc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

func openTestRegistry(t *testing.T) (*Registry, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), RegistryFile)
	r, err := OpenRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	return r, path
}

func TestRegistryPersists(t *testing.T) {
	r, path := openTestRegistry(t)
	_, mkey := newUser(t)
	_, okey := newUser(t)
	if _, err := r.AddMachine("10.0.0.1_web01", mkey, map[string]string{"role": "web"}, "admin", false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Label("10.0.0.1_web01", map[string]string{"location": "New-Brunswick"}, []string{"role"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddOperator("alice", okey, fleet.RoleViewer); err != nil {
		t.Fatal(err)
	}
	_, pkey := newUser(t)
	r.RecordPending("10.0.0.9_new", pkey, "10.0.0.9", "not in the registry")
	if err := r.FlushPending(); err != nil {
		t.Fatal(err)
	}

	r2, err := OpenRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r2.Machines(), r.Machines(); !reflect.DeepEqual(got, want) {
		t.Errorf("machines after reopen:\n got %+v\nwant %+v", got, want)
	}
	m, ok := r2.Machine("10.0.0.1_web01")
	if !ok {
		t.Fatal("machine lost on reopen")
	}
	if got, want := m.Labels, map[string]string{"location": "New-Brunswick"}; !reflect.DeepEqual(got, want) {
		t.Errorf("labels: got %v, want %v", got, want)
	}
	if m.Key != mkey || m.AddedBy != "admin" {
		t.Errorf("machine: got key %q by %q, want %q by %q", m.Key, m.AddedBy, mkey, "admin")
	}
	if got, want := r2.Operators(), r.Operators(); !reflect.DeepEqual(got, want) {
		t.Errorf("operators after reopen:\n got %+v\nwant %+v", got, want)
	}
	o, ok := r2.OperatorByKey(okey)
	if !ok || o.Name != "alice" || o.Role != fleet.RoleViewer {
		t.Errorf("OperatorByKey: got %+v, %v; want alice viewer", o, ok)
	}
	if got, want := r2.Pending(), r.Pending(); !reflect.DeepEqual(got, want) {
		t.Errorf("pending after reopen:\n got %+v\nwant %+v", got, want)
	}
}

func TestRegistryFileMode(t *testing.T) {
	r, path := openTestRegistry(t)
	_, key := newUser(t)
	if _, err := r.AddMachine("web01", key, nil, "", false); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Fatalf("registry file mode: got %v, want %v", got, os.FileMode(0o600))
	}
	// No temporary files are left beside it.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want only %s", names, RegistryFile)
	}
}

func TestOpenRegistryMissingFileIsEmpty(t *testing.T) {
	r, path := openTestRegistry(t)
	if len(r.Machines()) != 0 || len(r.Operators()) != 0 || len(r.Pending()) != 0 {
		t.Fatal("a new registry is not empty")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("opening created the file (stat: %v)", err)
	}
}

func TestOpenRegistryRefusesBadFiles(t *testing.T) {
	_, ukey := newUser(t)
	tests := []struct {
		name, content, want string
	}{
		{"not json", "{machines:", "not valid JSON"},
		{"truncated", `{"version":1,"machines":{`, "not valid JSON"},
		{"wrong type", `{"machines":[]}`, "not valid JSON"},
		{"machine id mismatch", fmt.Sprintf(`{"machines":{"a":{"id":"b","key":%q}}}`, ukey), `machine entry "a" is malformed`},
		{"null machine", `{"machines":{"a":null}}`, `machine entry "a" is malformed`},
		{"bad machine id", fmt.Sprintf(`{"machines":{"a b":{"id":"a b","key":%q}}}`, ukey), "only letters"},
		{"bad machine key", `{"machines":{"a":{"id":"a","key":"UNOTAKEY"}}}`, "invalid key"},
		{"operator bad role", fmt.Sprintf(`{"operators":{"bob":{"name":"bob","key":%q,"role":"root"}}}`, ukey), `operator entry "bob" is malformed`},
		{"operator bad key", `{"operators":{"bob":{"name":"bob","key":"x","role":"admin"}}}`, `operator entry "bob" is malformed`},
		{"operator name mismatch", fmt.Sprintf(`{"operators":{"bob":{"name":"eve","key":%q,"role":"admin"}}}`, ukey), `operator entry "bob" is malformed`},
		{"null pending", `{"pending":{"x":null}}`, `pending entry "x" is malformed`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), RegistryFile)
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := OpenRegistry(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the file %s", err, path)
			}
		})
	}
}

func TestOpenRegistryUnreadable(t *testing.T) {
	dir := t.TempDir()
	// A directory where the file should be cannot be read as a file.
	if _, err := OpenRegistry(dir); err == nil || !strings.Contains(err.Error(), "read registry") {
		t.Fatalf("got %v, want a read registry error", err)
	}
}

func TestAddMachineRefuses(t *testing.T) {
	r, _ := openTestRegistry(t)
	_, key := newUser(t)
	_, other := newUser(t)
	if _, err := r.AddMachine("web01", key, nil, "", false); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, id, key string
		labels        map[string]string
		wantIs        error
		want          string
	}{
		{name: "bad id", id: "web 01", key: other, want: "only letters"},
		{name: "empty id", id: "", key: other, want: "empty"},
		{name: "bad key", id: "web02", key: "UXYZ", want: "not a public user nkey"},
		{name: "account key", id: "web02", key: "ADBFPQQJUYVVXBHFOVEAT7GVGVETNXGREVDOVXLQGXJVDAAXMS4QQ3EB", want: "not a public user nkey"},
		{name: "bad label key", id: "web02", key: other, labels: map[string]string{"a.b": "x"}, want: "label key"},
		{name: "duplicate", id: "web01", key: other, wantIs: ErrExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.AddMachine(tt.id, tt.key, tt.labels, "", false)
			if err == nil {
				t.Fatal("got no error")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("got %v, want %v", err, tt.wantIs)
			}
			if tt.want != "" && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %q, want it to contain %q", err, tt.want)
			}
		})
	}
	if m, _ := r.Machine("web01"); m.Key != key {
		t.Fatalf("a refused duplicate changed the key to %q", m.Key)
	}
	if _, ok := r.Machine("web02"); ok {
		t.Fatal("a refused machine was registered")
	}
	// replace=true replaces.
	if _, err := r.AddMachine("web01", other, nil, "", true); err != nil {
		t.Fatal(err)
	}
	if m, _ := r.Machine("web01"); m.Key != other {
		t.Fatalf("replace: got key %q, want %q", m.Key, other)
	}
}

func TestAcceptMovesPendingToMachines(t *testing.T) {
	r, path := openTestRegistry(t)
	_, key := newUser(t)
	r.RecordPending("10.0.0.3_db01", key, "10.0.0.3", "not in the registry")
	if p := r.Pending(); len(p) != 1 || p[0].Key != key || p[0].IP != "10.0.0.3" || p[0].Attempts != 1 {
		t.Fatalf("pending: got %+v", p)
	}
	m, err := r.Accept("10.0.0.3_db01", "", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if m.Key != key || m.AddedBy != "alice" || m.ID != "10.0.0.3_db01" {
		t.Fatalf("accepted: got %+v, want key %s by alice", m, key)
	}
	if len(r.Pending()) != 0 {
		t.Fatalf("still pending after accept: %+v", r.Pending())
	}
	r2, err := OpenRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := r2.Machine("10.0.0.3_db01"); !ok || got.Key != key {
		t.Fatalf("after reopen: got %+v, %v", got, ok)
	}
	if len(r2.Pending()) != 0 {
		t.Fatal("pending entry came back after reopen")
	}
	if _, err := r.Accept("10.0.0.3_db01", "", "alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second accept: got %v, want ErrNotFound", err)
	}
}

// TestAcceptKeepsLabelsOnReaccept: a rebuilt machine (new key) is re-accepted
// with its labels.
func TestAcceptKeepsLabelsOnReaccept(t *testing.T) {
	r, _ := openTestRegistry(t)
	_, k1 := newUser(t)
	_, k2 := newUser(t)
	if _, err := r.AddMachine("web01", k1, map[string]string{"env": "prod"}, "", false); err != nil {
		t.Fatal(err)
	}
	r.RecordPending("web01", k2, "", "key does not match the key on record")
	m, err := r.Accept("web01", "", "admin")
	if err != nil {
		t.Fatal(err)
	}
	if m.ReplacedKey != k1 {
		t.Fatalf("re-accepted: replaced key %q, want %q", m.ReplacedKey, k1)
	}
	if m.Key != k2 || m.Labels["env"] != "prod" {
		t.Fatalf("re-accepted: got key %q labels %v, want key %q labels env=prod", m.Key, m.Labels, k2)
	}
}

func TestAcceptUnknown(t *testing.T) {
	r, _ := openTestRegistry(t)
	_, err := r.Accept("nobody", "", "admin")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "cc-bench machines pending") {
		t.Fatalf("got %v, want ErrNotFound with a hint", err)
	}
}

func TestRecordPendingUpdatesInMemory(t *testing.T) {
	r, path := openTestRegistry(t)
	_, key := newUser(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := base
	r.now = func() time.Time { return now }
	r.RecordPending("web01", key, "10.0.0.1", "not in the registry")
	now = base.Add(time.Minute)
	r.RecordPending("web01", key, "10.0.0.2", "not in the registry")
	p := r.Pending()[0]
	if p.Attempts != 2 || p.IP != "10.0.0.2" || !p.FirstSeen.Equal(base) || !p.LastSeen.Equal(now) {
		t.Fatalf("got %+v, want 2 attempts from 10.0.0.2 first seen %v last seen %v", p, base, now)
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), "10.0.0.2") {
		t.Fatal("a repeated attempt with the same key rewrote the file")
	}
	// A new key is written by the next flush.
	_, key2 := newUser(t)
	r.RecordPending("web01", key2, "10.0.0.3", "not in the registry")
	if err := r.FlushPending(); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if !strings.Contains(string(b), key2) {
		t.Fatal("a changed key was not written")
	}
	// The first key is kept beside the new one (it may be the real
	// machine's), and the id is flagged.
	if p := r.Pending()[0]; p.Attempts != 3 || p.Key != key2 || len(p.Keys) != 2 || p.Keys[0].Key != key2 || p.Keys[1].Key != key || p.Keys[1].Attempts != 2 || !p.MultipleKeys {
		t.Fatalf("after key change: got %+v, want both keys, the new one first", p)
	}
}

func TestRecordPendingBounded(t *testing.T) {
	r, _ := openTestRegistry(t)
	_, key := newUser(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// Fill to the bound directly (writing the file 10,000 times is slow);
	// entry i was last seen at base+i s, so "m0" is the oldest.
	r.mu.Lock()
	for i := range MaxPending {
		id := fmt.Sprintf("m%d", i)
		t0 := base.Add(time.Duration(i) * time.Second)
		r.data.Pending[id] = &fleet.Pending{ID: id, Key: key, FirstSeen: t0, LastSeen: t0, Attempts: 1}
	}
	r.mu.Unlock()
	r.now = func() time.Time { return base.Add(365 * 24 * time.Hour) }

	r.RecordPending("newcomer", key, "", "not in the registry")
	ps := r.Pending()
	if got := len(ps); got != MaxPending {
		t.Fatalf("pending: got %d entries, want %d", got, MaxPending)
	}
	has := map[string]bool{}
	for _, p := range ps {
		has[p.ID] = true
	}
	if has["m0"] {
		t.Error("the oldest entry m0 was kept")
	}
	if !has["newcomer"] || !has["m1"] || !has[fmt.Sprintf("m%d", MaxPending-1)] {
		t.Error("the newcomer or a newer entry was dropped")
	}
	// An update to an existing entry drops nothing.
	r.RecordPending("m5", key, "", "not in the registry")
	if got := len(r.Pending()); got != MaxPending {
		t.Fatalf("after update: got %d entries, want %d", got, MaxPending)
	}
	if !has["m1"] {
		t.Fatal("m1 missing")
	}
	r.RecordPending("second", key, "", "not in the registry")
	has = map[string]bool{}
	for _, p := range r.Pending() {
		has[p.ID] = true
	}
	if has["m1"] || !has["m5"] || !has["second"] || len(has) != MaxPending {
		t.Fatalf("second overflow: m1 kept=%v, m5 kept=%v, second=%v, n=%d; want false,true,true,%d",
			has["m1"], has["m5"], has["second"], len(has), MaxPending)
	}
}

// TestRecordPendingBoundedSlow drives the bound through the public API
// only: 10,001 distinct unknown machines.
func TestRecordPendingBoundedSlow(t *testing.T) {
	if testing.Short() {
		t.Skip("writes the registry file 10,001 times")
	}
	r, _ := openTestRegistry(t)
	_, key := newUser(t)
	deadline := time.Now().Add(60 * time.Second)
	for i := range MaxPending + 1 {
		r.RecordPending(fmt.Sprintf("m%d", i), key, "", "not in the registry")
		if time.Now().After(deadline) {
			t.Fatalf("recorded only %d unknown machines in 60s", i)
		}
	}
	if got := len(r.Pending()); got != MaxPending {
		t.Fatalf("got %d entries, want %d", got, MaxPending)
	}
}

func TestRemoveMachine(t *testing.T) {
	r, _ := openTestRegistry(t)
	_, key := newUser(t)
	if err := r.RemoveMachine("ghost"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove unknown: got %v, want ErrNotFound", err)
	}
	if _, err := r.AddMachine("web01", key, nil, "", false); err != nil {
		t.Fatal(err)
	}
	r.RecordPending("web01", key, "", "x") // the same id pending too
	if err := r.RemoveMachine("web01"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Machine("web01"); ok {
		t.Fatal("machine still registered")
	}
	if len(r.Pending()) != 0 {
		t.Fatal("pending entry left behind")
	}
	r.RecordPending("pend01", key, "", "x")
	if err := r.RemoveMachine("pend01"); err != nil {
		t.Fatalf("remove a pending-only machine: %v", err)
	}
	if err := r.RemoveMachine("pend01"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second remove: got %v, want ErrNotFound", err)
	}
}

func TestAddOperator(t *testing.T) {
	r, _ := openTestRegistry(t)
	_, k1 := newUser(t)
	_, k2 := newUser(t)
	_, mkey := newUser(t)
	if _, err := r.AddMachine("web01", mkey, nil, "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddOperator("alice", k1, fleet.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, op, key, role string
		wantIs              error
		want                string
	}{
		{name: "duplicate name", op: "alice", key: k2, role: fleet.RoleViewer, wantIs: ErrExists},
		{name: "duplicate key", op: "bob", key: k1, role: fleet.RoleViewer, wantIs: ErrExists, want: "already belongs to operator alice"},
		{name: "machine key", op: "bob", key: mkey, role: fleet.RoleViewer, wantIs: ErrExists, want: "belongs to machine web01"},
		{name: "bad role", op: "bob", key: k2, role: "root", want: `role "root" is unknown`},
		{name: "bad key", op: "bob", key: "nope", role: fleet.RoleViewer, want: "not a public user nkey"},
		{name: "bad name", op: "b.o.b", key: k2, role: fleet.RoleViewer, want: "operator name"},
		{name: "empty name", op: "", key: k2, role: fleet.RoleViewer, want: "operator name is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.AddOperator(tt.op, tt.key, tt.role)
			if err == nil {
				t.Fatal("got no error")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("got %v, want %v", err, tt.wantIs)
			}
			if tt.want != "" && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %q, want it to contain %q", err, tt.want)
			}
		})
	}
	if got := len(r.Operators()); got != 1 {
		t.Fatalf("operators: got %d, want 1", got)
	}
	if _, err := r.RemoveOperator("bob"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove unknown operator: got %v, want ErrNotFound", err)
	}
	if _, err := r.RemoveOperator("alice"); !errors.Is(err, ErrConflict) {
		t.Fatalf("remove the last admin: got %v, want ErrConflict", err)
	}
	_, k3 := newUser(t)
	if _, err := r.AddOperator("carol", k3, fleet.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	o, err := r.RemoveOperator("alice")
	if err != nil || o.Key != k1 {
		t.Fatalf("remove alice: got %+v, %v", o, err)
	}
	if _, ok := r.OperatorByKey(k1); ok {
		t.Fatal("removed operator still found by key")
	}
}

func TestLabel(t *testing.T) {
	r, _ := openTestRegistry(t)
	_, key := newUser(t)
	if _, err := r.AddMachine("web01", key, nil, "", false); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		set    map[string]string
		remove []string
		want   string
	}{
		{"dot in key", map[string]string{"a.b": "x"}, nil, "label key"},
		{"empty key", map[string]string{"": "x"}, nil, "label key is empty"},
		{"space in key", map[string]string{"a b": "x"}, nil, "label key"},
		{"long key", map[string]string{strings.Repeat("k", fleet.MaxIDLen+1): "x"}, nil, "label key"},
		{"long value", map[string]string{"k": strings.Repeat("v", 257)}, nil, "at most 256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := r.Label("web01", tt.set, tt.remove); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if l := r.Labels("web01"); len(l) != 0 {
		t.Fatalf("refused labels were applied: %v", l)
	}
	m, err := r.Label("web01", map[string]string{"role": "web", "env": strings.Repeat("v", 256)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Labels) != 2 {
		t.Fatalf("labels: got %v", m.Labels)
	}
	m, err = r.Label("web01", map[string]string{"role": "db"}, []string{"env", "absent"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Labels, map[string]string{"role": "db"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("labels: got %v, want %v", got, want)
	}
	if _, err := r.Label("ghost", map[string]string{"a": "b"}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("label unknown: got %v, want ErrNotFound", err)
	}
	if r.Labels("ghost") != nil {
		t.Fatal("labels of an unknown machine are not nil")
	}
}

func TestRegistryReturnsCopies(t *testing.T) {
	r, _ := openTestRegistry(t)
	_, key := newUser(t)
	labels := map[string]string{"role": "web"}
	m, err := r.AddMachine("web01", key, labels, "", false)
	if err != nil {
		t.Fatal(err)
	}
	labels["role"] = "caller-changed"
	m.Labels["role"] = "result-changed"
	got, _ := r.Machine("web01")
	got.Labels["role"] = "copy-changed"
	r.Labels("web01")["role"] = "labels-changed"
	r.Machines()[0].Labels["role"] = "list-changed"
	if v := r.Labels("web01")["role"]; v != "web" {
		t.Fatalf("registry labels changed through a copy: got %q, want %q", v, "web")
	}
}

// TestFailedSaveIsNotApplied: "every change is written to disk before it
// is acknowledged" — a change whose write failed must not take effect in
// memory either, or a machine is admitted although the operator was told
// the add failed (and is forgotten at the next restart).
func TestFailedSaveIsNotApplied(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gone")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	r, err := OpenRegistry(filepath.Join(dir, RegistryFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	_, key := newUser(t)
	if _, err := r.AddMachine("web01", key, nil, "", false); err == nil {
		t.Fatal("AddMachine succeeded although the file cannot be written")
	}
	if _, ok := r.Machine("web01"); ok {
		t.Fatal("AddMachine returned an error, yet the machine is registered (and would be admitted by the callout)")
	}
	if _, err := r.AddOperator("eve", key, fleet.RoleAdmin); err == nil {
		t.Fatal("AddOperator succeeded although the file cannot be written")
	}
	if _, ok := r.OperatorByKey(key); ok {
		t.Fatal("AddOperator returned an error, yet the operator exists")
	}
}

// TestOpenRegistryRefusesMissingFields: a registry whose machines (or
// operators) are misspelt, missing or null used to load as an empty fleet,
// and the next write made the loss permanent. Each is refused, naming the
// field and the file, and the file is left as it was.
func TestOpenRegistryRefusesMissingFields(t *testing.T) {
	_, ukey := newUser(t)
	machines := fmt.Sprintf(`{"10.0.0.1_a":{"id":"10.0.0.1_a","key":%q}}`, ukey)
	operators := fmt.Sprintf(`{"bob":{"name":"bob","key":%q,"role":"admin"}}`, ukey)
	tests := []struct {
		name, content, want string
	}{
		{"misspelt machines", `{"version":1,"machnes":` + machines + `,"operators":` + operators + `}`, `unknown top-level field "machnes"`},
		{"null machines", `{"version":1,"machines":null,"operators":` + operators + `}`, `top-level field "machines" is missing or null`},
		{"missing machines", `{"version":1,"operators":` + operators + `}`, `top-level field "machines" is missing or null`},
		{"null operators", `{"version":1,"machines":` + machines + `,"operators":null}`, `top-level field "operators" is missing or null`},
		{"missing version", `{"machines":` + machines + `,"operators":` + operators + `}`, `top-level field "version" is missing or null`},
		{"other version", `{"version":2,"machines":` + machines + `,"operators":` + operators + `}`, `version 2 is not one this cc-control reads`},
		{"null file", `null`, `it holds null`},
		{"empty object", `{}`, `top-level field "version" is missing or null`},
		{"unknown machine field", `{"version":1,"machines":{"10.0.0.1_a":{"id":"10.0.0.1_a","key":"` + ukey + `","lables":{}}},"operators":` + operators + `}`, `unknown field "lables"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), RegistryFile)
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := OpenRegistry(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("got %v, want an error naming %s and containing %q", err, path, tt.want)
			}
			if b, _ := os.ReadFile(path); string(b) != tt.content {
				t.Fatalf("the file was rewritten: %s", b)
			}
		})
	}
	// A file as cc-control writes it loads, without "pending" too.
	path := filepath.Join(t.TempDir(), RegistryFile)
	good := `{"version":1,"machines":` + machines + `,"operators":` + operators + `}`
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := OpenRegistry(path)
	if err != nil || len(r.Machines()) != 1 || len(r.Operators()) != 1 {
		t.Fatalf("a good file: %v", err)
	}
}

// TestAcceptPicksReviewedKey: with several keys pending for an id, accept
// needs the key (or a unique prefix), and binds that one whatever tried last.
func TestAcceptPicksReviewedKey(t *testing.T) {
	r, _ := openTestRegistry(t)
	_, real := newUser(t)
	_, thief := newUser(t)
	r.RecordPending("web01", real, "10.0.0.1", "not in the registry")
	for range 3 {
		r.RecordPending("web01", thief, "10.6.6.6", "not in the registry")
	}
	if _, err := r.Accept("web01", "", "admin"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "--pubkey KEY") {
		t.Fatalf("accept without a key: got %v, want ErrConflict naming --pubkey", err)
	}
	if _, err := r.Accept("web01", "UNOSUCHKEY", "admin"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "machines add web01 --pubkey KEY") {
		t.Fatalf("accept with an unknown prefix: got %v", err)
	}
	if _, err := r.Accept("web01", "U", "admin"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("accept with an ambiguous prefix: got %v, want ErrInvalid", err)
	}
	m, err := r.Accept("web01", real[:8], "admin")
	if err != nil || m.Key != real {
		t.Fatalf("accept %s: got %+v, %v; want key %s", real[:8], m, err, real)
	}
}

// TestRecordPendingKeysBounded: at most MaxPendingKeys keys are kept per
// id; the least recently seen goes first and is counted.
func TestRecordPendingKeysBounded(t *testing.T) {
	r, _ := openTestRegistry(t)
	var first string
	for i := range fleet.MaxPendingKeys + 1 {
		_, k := newUser(t)
		if i == 0 {
			first = k
		}
		r.RecordPending("web01", k, "", "not in the registry")
	}
	p := r.Pending()[0]
	if len(p.Keys) != fleet.MaxPendingKeys || p.KeysDropped != 1 || !p.MultipleKeys || p.Attempts != fleet.MaxPendingKeys+1 {
		t.Fatalf("got %d keys, %d dropped, %d attempts", len(p.Keys), p.KeysDropped, p.Attempts)
	}
	for _, k := range p.Keys {
		if k.Key == first {
			t.Fatal("the least recently seen key was kept")
		}
	}
}

// Accept is [Registry.AcceptAt] at the machine's own place (the tests'
// shorthand; the control API always names the site).
func (r *Registry) Accept(id, want, by string) (fleet.MachineChange, error) {
	return r.AcceptAt(id, want, "", by)
}

// RecordPending is [Registry.RecordPendingAt] for an attempt at the hub's
// own brokers (the tests' shorthand).
func (r *Registry) RecordPending(id, key, ip, reason string) {
	r.RecordPendingAt(id, key, ip, "", reason)
}
