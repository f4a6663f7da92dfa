package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestRegistryExportImport: an export of a registry too large for one
// message comes in pages and writes a file in registry.json's format
// (OpenRegistry loads it); importing it back adds what was removed since,
// changes what differs and skips the rest, saying so; an old
// registry.json imports too; a viewer may do neither.
func TestRegistryExportImport(t *testing.T) {
	f := startFleet(t)
	reg := f.svc.Registry()
	const n = 3000 // about 0.6 MB of machines: more than one page
	reqs := make([]fleet.MachineRequest, n)
	for i := range reqs {
		reqs[i] = fleet.MachineRequest{ID: fmt.Sprintf("10.1.%d.%d_m%04d", i/256, i%256, i), Key: stacktest.Pub(t, stacktest.Key(t, fmt.Sprint("m", i))),
			Labels: map[string]string{"role": "web", "rack": fmt.Sprint(i % 40)}}
	}
	if _, err := reg.AddMachines(reqs, "test"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	backup := filepath.Join(dir, "backup.json")
	stdout, stderr, code := cc(t, f.env(), "registry", "export", backup)
	if code != exitOK {
		t.Fatalf("export: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, fmt.Sprintf("exported %d machines, 0 pending machines, 2 operators and 0 apps", n)) {
		t.Errorf("export said: %s", stdout)
	}
	loaded, err := controlsvc.OpenRegistry(backup)
	if err != nil {
		t.Fatalf("the export is not a registry file: %v", err)
	}
	if got := len(loaded.Machines()); got != n || len(loaded.Operators()) != 2 {
		t.Fatalf("the export holds %d machines and %d operators, want %d and 2", got, len(loaded.Operators()), n)
	}
	if _, stderr, code := cc(t, f.env(), "registry", "export", backup); code != exitUsage || !strings.Contains(stderr, "--force") {
		t.Errorf("export over an existing file: exit %d, %s; want a usage error naming --force", code, stderr)
	}

	for _, id := range []string{reqs[0].ID, reqs[1].ID} {
		if err := reg.RemoveMachine(id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.Label(reqs[2].ID, map[string]string{"role": "db"}, nil); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code = cc(t, f.env(), "registry", "import", backup, "--json")
	if code != exitOK {
		t.Fatalf("import: exit %d: %s", code, stderr)
	}
	var res fleet.RegistryImportResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.Added["machines"] != 2 || res.Changed["machines"] != 1 || res.Skipped["machines"] != n-3 || res.Skipped["operators"] != 2 {
		t.Fatalf("import result %+v; want 2 machines added, 1 changed, %d skipped, 2 operators skipped", res, n-3)
	}
	if m, _ := reg.Machine(reqs[2].ID); m.Labels["role"] != "web" {
		t.Errorf("the changed machine has labels %v, want the backup's", m.Labels)
	}
	if len(reg.Machines()) != n {
		t.Errorf("after the import: %d machines, want %d", len(reg.Machines()), n)
	}

	// An old registry.json (the file store's own) imports as it is.
	oldPath := filepath.Join(dir, "old", controlsvc.RegistryFile)
	if err := os.Mkdir(filepath.Dir(oldPath), 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := controlsvc.OpenRegistry(oldPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.AddMachine("10.9.9.9_legacy", stacktest.Pub(t, stacktest.Key(t, "legacy")), nil, "admin", false); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code = cc(t, f.env(), "registry", "import", oldPath)
	if code != exitOK || !strings.Contains(stdout, "added 1 machines") {
		t.Fatalf("import of an old registry.json: exit %d: %s%s", code, stdout, stderr)
	}
	if _, ok := reg.Machine("10.9.9.9_legacy"); !ok {
		t.Fatal("the old registry.json's machine is not registered")
	}

	viewer := map[string]string{"CC_SERVER": f.url, "CC_KEY": f.viewerKey}
	for _, args := range [][]string{{"registry", "export", filepath.Join(dir, "v.json")}, {"registry", "import", backup}} {
		if _, stderr, code := cc(t, viewer, args...); code == exitOK || !strings.Contains(stderr, "admin") {
			t.Errorf("viewer %q: exit %d, %s; want a refusal naming the admin role", args, code, stderr)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`{"version":1,"machnes":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := cc(t, f.env(), "registry", "import", filepath.Join(dir, "bad.json")); code != exitUsage || !strings.Contains(stderr, "machnes") {
		t.Errorf("a misspelt file: exit %d, %s; want a usage error naming the field", code, stderr)
	}
}
