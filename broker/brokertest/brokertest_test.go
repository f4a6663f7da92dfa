package brokertest_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/nats-io/nkeys"
)

func TestStartServesOnLoopback(t *testing.T) {
	b, keys := brokertest.Start(t)
	if u := b.ClientURL(); !strings.HasPrefix(u, "nats://127.0.0.1:") || strings.HasSuffix(u, ":4222") {
		t.Fatalf("ClientURL: got %q, want nats://127.0.0.1:<random port>", u)
	}
	if err := keys.Auth().Validate(); err != nil {
		t.Fatalf("generated keys do not validate: %v", err)
	}
	seed, err := keys.Sys.Seed()
	if err != nil || len(seed) == 0 {
		t.Fatalf("Sys key carries no seed: %v", err)
	}
	if _, err := keys.Issuer.Seed(); err != nil {
		t.Fatalf("Issuer key carries no seed: %v", err)
	}
}

func TestStartFreshKeysEachTime(t *testing.T) {
	_, k1 := brokertest.Start(t)
	_, k2 := brokertest.Start(t)
	if k1.Auth() == k2.Auth() {
		t.Fatal("two brokers got the same keys")
	}
}

// TestServiceUsersLandInTheirAccounts connects as each of the control
// service's users: each bypasses the callout and lands in its account.
func TestServiceUsersLandInTheirAccounts(t *testing.T) {
	b, keys := brokertest.Start(t)
	tests := []struct {
		name string
		kp   nkeys.KeyPair
		acc  string
	}{
		{"sys", keys.Sys, broker.SystemAccount},
		{"control", keys.Control, broker.ControlAccount},
		{"fleet", keys.Fleet, broker.FleetAccount},
	}
	sys := brokertest.Connect(t, b, keys.Sys)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc := brokertest.Connect(t, b, tt.kp)
			cid, err := nc.GetClientID()
			if err != nil {
				t.Fatal(err)
			}
			req, _ := json.Marshal(map[string]any{"cid": cid, "auth": true})
			m, err := sys.Request("$SYS.REQ.SERVER."+b.ID()+".CONNZ", req, 5*time.Second)
			if err != nil {
				t.Fatalf("CONNZ: %v", err)
			}
			var r struct {
				Data struct {
					Conns []struct {
						Cid     uint64 `json:"cid"`
						Account string `json:"account"`
					} `json:"connections"`
				} `json:"data"`
			}
			if err := json.Unmarshal(m.Data, &r); err != nil {
				t.Fatal(err)
			}
			if len(r.Data.Conns) != 1 {
				t.Fatalf("CONNZ for cid %d: got %d connections, want 1 (%s)", cid, len(r.Data.Conns), m.Data)
			}
			if got := r.Data.Conns[0].Account; got != tt.acc {
				t.Fatalf("account: got %q, want %q", got, tt.acc)
			}
		})
	}
}

func TestOptionsApply(t *testing.T) {
	var seen broker.Config
	b, _ := brokertest.Start(t, brokertest.WithAuthTimeout(700*time.Millisecond), brokertest.WithConfig(func(c *broker.Config) {
		c.Name = "bt-1"
		seen = *c
	}))
	if seen.AuthTimeout != 700*time.Millisecond {
		t.Fatalf("AuthTimeout: got %v, want %v", seen.AuthTimeout, 700*time.Millisecond)
	}
	if got := b.Server().Name(); got != "bt-1" {
		t.Fatalf("server name: got %q, want %q", got, "bt-1")
	}
}
