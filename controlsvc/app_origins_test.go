package controlsvc

import (
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// TestAppOriginsWarned: an app's origins are not enforced (the broker
// does not tell the callout a connection's Origin), so the service warns
// when they promise more than the broker's WebSocket origins give: at
// apps.add when the broker leaves one out, and at start for a registered
// app when the broker allows any origin.
func TestAppOriginsWarned(t *testing.T) {
	dir := t.TempDir()
	st := startSessionStack(t, func(c *Config) {
		c.DataDir = dir
		c.Broker.WebSocketListen = "127.0.0.1:0"
		c.Broker.WebSocketOrigins = []string{"https://app.example"}
	})
	add := func(name string, origins ...string) {
		t.Helper()
		if err := ctlCall(st.admin, fleet.OpAppsAdd, fleet.AppRequest{Name: name, Functions: []string{"latencyCheck"}, Public: true, Origins: origins}, nil); err != nil {
			t.Fatal(err)
		}
	}
	add("fine", "https://app.example")
	add("partly", "https://app.example", "https://other.example")
	log := st.log.String()
	if !strings.Contains(log, "app partly lists origins https://other.example that the broker's --websocket-origins (https://app.example) does not allow") {
		t.Fatalf("no warning for an origin the broker does not allow:\n%s", log)
	}
	if strings.Contains(log, "app fine lists") {
		t.Fatalf("a warning for an app whose origins the broker allows:\n%s", log)
	}
	st.svc.Close()

	// Restarted on the same registry with a listener open to any page.
	st2 := startSessionStack(t, func(c *Config) {
		c.DataDir = dir
		c.Broker.WebSocketListen = "127.0.0.1:0"
	})
	log = st2.log.String()
	for _, app := range []string{"fine", "partly"} {
		if !strings.Contains(log, "app "+app+" lists origins") || !strings.Contains(log, "lets pages of ANY origin connect") {
			t.Fatalf("no warning at start for app %s while any origin may connect:\n%s", app, log)
		}
	}
	if !strings.Contains(log, "level=WARN") {
		t.Fatalf("the warning is not at WARN level:\n%s", log)
	}
}
