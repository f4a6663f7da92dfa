package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/agent/custom"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestOperatorDefinedFunctionsAndRoles: one definitions directory given to
// the agent and to the control service; the viewer may call the function
// defined with role viewer and is refused by the broker for the admin one;
// the admin may call both.
func TestOperatorDefinedFunctionsAndRoles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("hello.json", `{"name":"hello","description":"says hello","command":["/bin/echo","hello","{{who}}"],
		"args":[{"name":"who","type":"string","required":true}],"role":"viewer","read_only":true,"timeout":"5s"}`)
	write("wipe.json", `{"name":"wipe","description":"mutates","command":["/bin/true"],"role":"admin","read_only":false}`)
	defs, errs := custom.LoadDefinitions(dir)
	if len(errs) > 0 || len(defs) != 2 {
		t.Fatalf("definitions: %d, errors %v", len(defs), errs)
	}
	svc := stacktest.StartControlWith(t, controlsvc.Config{DataDir: t.TempDir(), Broker: broker.Config{Listen: "127.0.0.1:0"},
		ReadOnlyFunctions: append(append([]string{}, controlsvc.DefaultReadOnlyFunctions...), custom.ViewerFunctions(defs)...)})
	const id = "10.0.0.9_custom"
	startAgentWith(t, svc, agent.Config{URL: svc.ClientURL(), MachineID: id, FunctionsDir: dir, NoSamplers: true}, true, nil)
	stacktest.WaitFor(t, "agent online", 5*time.Second, func() bool { return stacktest.Online(svc, id) })

	viewer := operatorConn(t, svc.ClientURL(), newOperator(t, svc, "val", "viewer"))
	m, err := stacktest.Request(viewer, id, "hello", []byte(`{"who":"a; rm -rf /"}`), 5*time.Second)
	if err != nil {
		t.Fatalf("viewer calling a viewer function: %v", err)
	}
	if !strings.Contains(string(m.Data), `hello a; rm -rf /`) {
		t.Fatalf("hello: got %q (the argument must reach argv literally)", m.Data)
	}
	if _, err := stacktest.Request(viewer, id, "wipe", nil, time.Second); err == nil {
		t.Fatal("viewer called an admin-only function")
	}
	admin := operatorConn(t, svc.ClientURL(), svc.AdminKeyPath())
	m, err = stacktest.Request(admin, id, "wipe", nil, 5*time.Second)
	if err != nil || m.Header.Get(fleet.HeaderErrorCode) != "" {
		t.Fatalf("admin calling wipe: %v %v", err, m.Header)
	}
}
