package e2e

import (
	"testing"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// These two are review15_import_test.go's (branch review15): the history
// tests use them too. Whichever branch merges second drops this file.

// adminBench connects to svc as its first admin, through the SDK.
func adminBench(t *testing.T, svc *controlsvc.Service) *bench.Client {
	t.Helper()
	return benchAs(t, svc, stacktest.WriteSeed(t, "admin", stacktest.AdminSeed(t, svc)))
}

// benchAs connects to svc with the operator seed in path, through the SDK.
func benchAs(t *testing.T, svc *controlsvc.Service, path string) *bench.Client {
	t.Helper()
	c, err := bench.Connect(svc.ClientURL(), bench.WithSeedFile(path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
