package broker_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// cloneConfig copies c deeply: its slices and its hub are copies too.
func cloneConfig(c broker.Config) broker.Config {
	c.Routes = slices.Clone(c.Routes)
	c.LeafSites = slices.Clone(c.LeafSites)
	c.WebSocketOrigins = slices.Clone(c.WebSocketOrigins)
	if c.Hub != nil {
		h := *c.Hub
		h.URLs = slices.Clone(h.URLs)
		c.Hub = &h
	}
	return c
}

// TestOptionsLeavesConfigAlone: Options fills the defaults of what it
// builds, not of the Config it was given (a caller building two brokers
// from one Config, or comparing it with its flags, sees what it set).
func TestOptionsLeavesConfigAlone(t *testing.T) {
	certs := stacktest.TLSFiles(t)
	tlsFiles := broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA}
	auth := validAuth(t)
	configs := map[string]broker.Config{
		"zero": {Auth: auth},
		"tls": {Auth: auth, Listen: "127.0.0.1:0", TLS: broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA, Verify: true},
			MonitorListen: "127.0.0.1:0", AuthTimeout: time.Minute},
		"cluster": {Auth: auth, ClusterListen: "127.0.0.1:0", ClusterSecret: testClusterSecret, ClusterTLS: tlsFiles,
			Routes: []string{"nats-route://127.0.0.1:6222", " nats-route://127.0.0.2:6222 "}, TLS: tlsFiles},
		"hub": {Auth: auth, LeafListen: "127.0.0.1:0", LeafTLS: broker.TLSFiles{CertFile: certs.Cert, KeyFile: certs.Key, CAFile: certs.CA, Verify: true},
			LeafSites: []broker.LeafSite{{Name: "dc2", PasswordBcrypt: testHash}, {Name: "dc3", PasswordBcrypt: testHash}}},
		"websocket": {Auth: auth, WebSocketListen: "0.0.0.0:0", TLS: tlsFiles, WebSocketOrigins: []string{" https://a.example/", "http://b.example:8080"}},
		"site": {Auth: auth, PingInterval: time.Second, Hub: &broker.LeafHub{URLs: []string{"nats-leaf://hub-a:7422", "nats-leaf://hub-b:7422"}, Site: "dc2", Secret: "s3cret"},
			HubTLS: broker.TLSFiles{CAFile: certs.CA, CertFile: certs.Cert, KeyFile: certs.Key}},
	}
	for name, cfg := range configs {
		t.Run(name, func(t *testing.T) {
			before := cloneConfig(cfg)
			if _, err := broker.Options(&cfg); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(before, cfg) {
				t.Errorf("Options changed its argument:\n before %+v\n after  %+v", before, cfg)
			}
			if !reflect.DeepEqual(before.Hub, cfg.Hub) {
				t.Errorf("Options changed the hub: before %+v, after %+v", before.Hub, cfg.Hub)
			}
		})
	}
}

// TestOptionsRefusesTinyMaxPayload: a max payload below broker.MinMaxPayload is
// refused whichever way it came (a config file skips the flag's check).
func TestOptionsRefusesTinyMaxPayload(t *testing.T) {
	for _, n := range []int32{16, -5, broker.MinMaxPayload - 1} {
		cfg := broker.Config{Auth: validAuth(t), Listen: "127.0.0.1:0", MaxPayload: n}
		if _, err := broker.Options(&cfg); err == nil || !strings.Contains(err.Error(), "max payload") {
			t.Errorf("max payload %d: got %v, want a refusal naming it", n, err)
		}
	}
	cfg := broker.Config{Auth: validAuth(t), Listen: "127.0.0.1:0", MaxPayload: broker.MinMaxPayload}
	if _, err := broker.Options(&cfg); err != nil {
		t.Errorf("max payload %d: %v", broker.MinMaxPayload, err)
	}
}
