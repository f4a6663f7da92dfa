package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestTLSAgentProcess: the cc-agent binary, given the broker's CA and a
// client certificate, joins a broker that speaks only mutual TLS and
// answers an operator who verifies the broker too. The same binary with
// the wrong CA stays out and its log says which CA to check.
func TestTLSAgentProcess(t *testing.T) {
	st := stacktest.StartTLSStack(t, true)
	bin := buildAgent(t)
	start := func(id, ca string) *stacktest.Buffer {
		var log stacktest.Buffer
		cmd := exec.Command(bin, "--server", st.URL, "--key", agentKeyFile(t, st.Svc, id), "--id", id,
			"--tls-ca", ca, "--tls-cert", st.ClientCert, "--tls-key", st.ClientKey, "--functions-dir", "")
		cmd.Stderr = &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return &log
	}
	start("127.0.0.1_tlsproc", st.CA)
	stacktest.WaitOnline(t, st.Svc, "127.0.0.1_tlsproc")
	c, err := bench.Connect(st.URL, bench.WithSeedFile(st.Svc.AdminKeyPath()), bench.WithTLSCA(st.CA),
		bench.WithClientCert(st.ClientCert, st.ClientKey))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Call(context.Background(), "current-load", nil, bench.CallOptions{Machines: []string{"127.0.0.1_tlsproc"}, Timeout: 10 * time.Second})
	if err != nil || !res.AllOK() || len(res.Replied) != 1 {
		t.Fatalf("call over TLS: %v %+v", err, res)
	}

	log := start("127.0.0.1_wrongca", st.OtherCA)
	want := "not signed by the CA in " + st.OtherCA
	deadline := time.Now().Add(stacktest.WaitTimeout)
	for !strings.Contains(log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the agent's log:\n%s", want, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if stacktest.Online(st.Svc, "127.0.0.1_wrongca") {
		t.Fatal("the agent with the wrong CA is ONLINE")
	}
}
