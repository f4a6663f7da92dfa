package agent_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/internal/natstls"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// tlsAgent builds machine id's agent (registered) for the TLS stack with
// cfg's TLS settings, logging into log.
func tlsAgent(t *testing.T, st *stacktest.TLSStack, id string, cfg agent.Config, log *stacktest.Buffer) *agent.Agent {
	t.Helper()
	stacktest.RegisterMachine(t, st.Svc, id, nil)
	cfg.URL, cfg.Key, cfg.MachineID, cfg.NoSamplers = st.URL, stacktest.MachineKey(t, id), id, true
	cfg.MaxReconnectDelay = 300 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(log, nil))
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

// TestAgentTLS: an agent that verifies the broker against its CA joins
// and answers a call over TLS; with mutual TLS it presents its client
// certificate.
func TestAgentTLS(t *testing.T) {
	for _, mutual := range []bool{false, true} {
		st := stacktest.StartTLSStack(t, mutual)
		cfg := agent.Config{TLSCA: st.CA}
		if mutual {
			cfg.TLSCert, cfg.TLSKey = st.ClientCert, st.ClientKey
		}
		id := "127.0.0.1_tls"
		a := tlsAgent(t, st, id, cfg, &stacktest.Buffer{})
		stacktest.RunAgent(t, st.Svc, a)
		op := stacktest.Key(t, "operator:admin")
		stacktest.AddOperator(t, st.Svc, "tls-admin", "admin", op)
		nc := stacktest.Connect(t, st.URL, op, "op (test)", nats.Secure(stacktest.ClientTLS(t, st.CA, st.ClientCert, st.ClientKey)))
		if _, err := stacktest.Request(nc, id, "machine-info", nil, 10*time.Second); err != nil {
			t.Fatalf("mutual %v: call over TLS: %v", mutual, err)
		}
	}
}

// TestAgentWrongCA: an agent given the wrong CA never joins, and its log
// says which CA failed and what to check; one without the client
// certificate a broker requires is told to pass it.
func TestAgentWrongCA(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutual bool
		cfg    func(st *stacktest.TLSStack) agent.Config
		want   string
	}{
		{"wrong CA", false, func(st *stacktest.TLSStack) agent.Config { return agent.Config{TLSCA: st.OtherCA} },
			"not signed by the CA in "},
		{"no client certificate", true, func(st *stacktest.TLSStack) agent.Config { return agent.Config{TLSCA: st.CA} },
			"requires a client certificate signed by its CA: pass --tls-cert FILE --tls-key FILE"},
	} {
		st := stacktest.StartTLSStack(t, tt.mutual)
		var log stacktest.Buffer
		a := tlsAgent(t, st, "127.0.0.1_wrongca", tt.cfg(st), &log)
		if err := a.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(stacktest.WaitTimeout)
		for !strings.Contains(log.String(), tt.want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no %q in the agent's log after %s:\n%s", tt.name, tt.want, stacktest.WaitTimeout, log.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !strings.Contains(log.String(), "level=ERROR") || !strings.Contains(log.String(), st.URL) {
			t.Errorf("%s: want an ERROR naming %s:\n%s", tt.name, st.URL, log.String())
		}
		if stacktest.Online(st.Svc, "127.0.0.1_wrongca") {
			t.Errorf("%s: the agent is ONLINE", tt.name)
		}
	}
}

// TestAgentRefusesPlaintextOffHost: New refuses plain text to an address
// that is not loopback — before it dials anything — naming the URL and
// both ways out; with AllowPlaintext it is built.
func TestAgentRefusesPlaintextOffHost(t *testing.T) {
	key := stacktest.MachineKey(t, "10.0.0.9_web")
	for _, url := range []string{"nats://10.0.0.5:4222", "nats://127.0.0.1:4222, nats://[2001:db8::5]:4222", "control.example"} {
		_, err := agent.New(agent.Config{URL: url, Key: key, MachineID: "10.0.0.9_web"})
		if !errors.Is(err, natstls.ErrPlaintext) || !strings.Contains(err.Error(), "--tls-ca FILE") || !strings.Contains(err.Error(), "--allow-plaintext") {
			t.Errorf("%s: err = %v; want the plain-text refusal with advice", url, err)
		}
	}
	if _, err := agent.New(agent.Config{URL: "nats://10.0.0.5:4222", AllowPlaintext: true, Key: key, MachineID: "10.0.0.9_web"}); err != nil {
		t.Errorf("with AllowPlaintext: %v", err)
	}
	if _, err := agent.New(agent.Config{URL: "tls://10.0.0.5:4222", Key: key, MachineID: "10.0.0.9_web"}); err != nil {
		t.Errorf("tls:// URL: %v", err)
	}
}
