package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyDirection keeps the layering of docs/ARCHITECTURE.md: the agent never
// links nats-server, the workbench never links the broker or the control
// service, the wire package imports nothing of this module, the
// stand-alone broker links no control service, package databases are a
// library that knows nothing of functions or the wire, the built-in
// functions know nothing of operators' custom ones, and package geo
// imports nothing of this module but fleet.
func TestDependencyDirection(t *testing.T) {
	const mod = "github.com/commandcontrol/commandcontrol/"
	rules := []struct {
		pkg       string
		forbidden []string
	}{
		{"./agent/...", []string{"github.com/nats-io/nats-server", mod + "broker", mod + "controlsvc", mod + "bench"}},
		{"./bench/...", []string{mod + "broker", mod + "controlsvc", mod + "agent", "github.com/nats-io/nats-server"}},
		{"./fleet", []string{mod}},
		{"./agent/pkgdb/...", []string{mod + "agent/functions", mod + "agent/custom", mod + "fleet"}},
		{"./agent/functions/...", []string{mod + "agent/custom"}},
		// The stand-alone broker reads the control service's
		// broker-auth.json through package broker alone.
		{"./cmd/cc-broker", []string{mod + "controlsvc", mod + "agent", mod + "bench"}},
		// Locations are a library on the wire's Location: no service,
		// broker or agent in it.
		{"./geo", []string{mod}},
	}
	for _, r := range rules {
		out, err := listDeps(r.pkg)
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", r.pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range r.forbidden {
				if strings.HasPrefix(dep, f) && !(r.pkg == "./fleet" && strings.HasPrefix(dep, mod+"fleet")) &&
					!(r.pkg == "./geo" && (strings.HasPrefix(dep, mod+"fleet") || strings.HasPrefix(dep, mod+"geo"))) {
					t.Errorf("%s depends on %s", r.pkg, dep)
				}
			}
		}
	}
}

func listDeps(pkg string) ([]byte, error) {
	cmd := exec.Command("go", "list", "-deps", pkg)
	cmd.Dir = ".."
	return cmd.CombinedOutput()
}
