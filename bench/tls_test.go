package bench_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent"
	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// startTLSAgent starts machine id's agent, registered, reaching the TLS
// broker with the stack's CA (and client certificate when mutual), and
// waits until it is ONLINE.
func startTLSAgent(t *testing.T, st *stacktest.TLSStack, id string, mutual bool) {
	t.Helper()
	stacktest.RegisterMachine(t, st.Svc, id, nil)
	cfg := agent.Config{URL: st.URL, TLSCA: st.CA, MachineID: id, NoSamplers: true}
	if mutual {
		cfg.TLSCert, cfg.TLSKey = st.ClientCert, st.ClientKey
	}
	stacktest.RunAgent(t, st.Svc, stacktest.NewAgentWith(t, cfg))
}

// callOK calls machine-info through c and wants an ok answer from id.
func callOK(t *testing.T, c *bench.Client, id string) {
	t.Helper()
	res, err := c.Call(context.Background(), "machine-info", nil, bench.CallOptions{Machines: []string{id}, Timeout: 10 * time.Second})
	if err != nil || !res.AllOK() || len(res.Replied) != 1 {
		t.Fatalf("call machine-info on %s over TLS: %v %+v", id, err, res)
	}
}

// TestConnectTLS: an operator and an agent verify a TLS-only broker
// against its CA and a call goes through; with another CA, or the
// system's roots, the handshake fails and the error says which CA to pass.
func TestConnectTLS(t *testing.T) {
	st := stacktest.StartTLSStack(t, false)
	startTLSAgent(t, st, "127.0.0.1_tls", false)
	seed := stacktest.AdminSeed(t, st.Svc)

	c, err := bench.Connect(st.URL, bench.WithSeed(seed), bench.WithTLSCA(st.CA))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Conn().TLSRequired() {
		t.Fatal("the connection is not TLS")
	}
	callOK(t, c, "127.0.0.1_tls")

	// The same address as nats://: the CA turns TLS on for it too.
	plainScheme := "nats://" + strings.TrimPrefix(st.URL, "tls://")
	c2, err := bench.Connect(plainScheme, bench.WithSeed(seed), bench.WithTLSCA(st.CA))
	if err != nil {
		t.Fatalf("nats:// URL with a CA: %v", err)
	}
	c2.Close()

	for _, tt := range []struct {
		name string
		url  string
		opts []bench.Option
		want string
	}{
		{"wrong CA", st.URL, []bench.Option{bench.WithTLSCA(st.OtherCA)},
			"the broker at " + st.URL + " presented a certificate not signed by the CA in " + st.OtherCA + ": check that bench.WithTLSCA(file) names the CA"},
		{"system roots", st.URL, nil,
			"not signed by a CA this system trusts: pass the CA that signed it with bench.WithTLSCA(file)"},
		{"TLS config without the CA", st.URL, []bench.Option{bench.WithTLS(stacktest.ClientTLS(t, st.OtherCA, "", ""))},
			"not signed by"},
	} {
		c, err := bench.Connect(tt.url, append([]bench.Option{bench.WithSeed(seed)}, tt.opts...)...)
		if err == nil {
			c.Close()
			t.Errorf("%s: connected; want a TLS failure", tt.name)
			continue
		}
		if !errors.Is(err, bench.ErrTLS) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v; want ErrTLS saying %q", tt.name, err, tt.want)
		}
	}
}

// TestConnectTLSToPlainBroker: a client told to verify the broker does not
// fall back to plain text when the broker offers none.
func TestConnectTLSToPlainBroker(t *testing.T) {
	svc := stacktest.StartControl(t)
	ca, _, _, _, _ := stacktest.TLSFiles(t).Files()
	_, err := bench.Connect(svc.ClientURL(), bench.WithSeed(stacktest.AdminSeed(t, svc)), bench.WithTLSCA(ca))
	if !errors.Is(err, bench.ErrTLS) || !strings.Contains(err.Error(), "does not offer TLS") {
		t.Fatalf("err = %v; want ErrTLS: does not offer TLS", err)
	}
}

// TestConnectMutualTLS: a broker that requires client certificates lets in
// an operator and an agent that present one its CA signed, and tells one
// without what to pass.
func TestConnectMutualTLS(t *testing.T) {
	st := stacktest.StartTLSStack(t, true)
	startTLSAgent(t, st, "127.0.0.1_mtls", true)
	seed := stacktest.AdminSeed(t, st.Svc)
	c, err := bench.Connect(st.URL, bench.WithSeed(seed), bench.WithTLSCA(st.CA), bench.WithClientCert(st.ClientCert, st.ClientKey))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	callOK(t, c, "127.0.0.1_mtls")

	_, err = bench.Connect(st.URL, bench.WithSeed(seed), bench.WithTLSCA(st.CA))
	if !errors.Is(err, bench.ErrTLS) || !strings.Contains(err.Error(), "requires a client certificate signed by its CA: pass bench.WithClientCert(certFile, keyFile)") {
		t.Fatalf("without a client certificate: err = %v", err)
	}
	_, err = bench.Connect(st.URL, bench.WithSeed(seed), bench.WithTLSCA(st.CA), bench.WithClientCert(st.OtherClientCert, st.OtherClientKey))
	if !errors.Is(err, bench.ErrTLS) || !strings.Contains(err.Error(), "did not accept this client certificate") {
		t.Fatalf("a client certificate another CA signed: err = %v", err)
	}
}

// TestConnectRefusesPlaintextOffHost: plain text to an address that is not
// loopback is refused before any dial (the addresses here are never
// reached), every URL of a list counts, and WithPlaintext lets it through.
func TestConnectRefusesPlaintextOffHost(t *testing.T) {
	for _, url := range []string{"nats://10.0.0.5:4222", "nats://127.0.0.1:4222,nats://192.0.2.7:4222", "ws://[2001:db8::1]:8080", "control.example:4222"} {
		_, err := bench.Connect(url)
		if !errors.Is(err, bench.ErrPlaintext) || !strings.Contains(err.Error(), "bench.WithTLSCA(file)") || !strings.Contains(err.Error(), "bench.WithPlaintext()") {
			t.Errorf("%s: err = %v; want ErrPlaintext with advice", url, err)
		}
	}
	// Loopback in plain text works (the quick start), and the opt-out is
	// accepted; here it reaches a real broker on loopback.
	svc := stacktest.StartControl(t)
	for _, opts := range [][]bench.Option{nil, {bench.WithPlaintext()}} {
		c, err := bench.Connect(svc.ClientURL(), append(opts, bench.WithSeed(stacktest.AdminSeed(t, svc)))...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WhoAmI(context.Background()); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
}

// TestSnapshotOwnConnectionOverTLS: the control service serves each
// operator's attributed snapshot subject on a connection of its own; that
// connection reaches a mutual-TLS broker the way the service's others do
// (it once dialled the bare URL, failed, and every snapshot fell back to
// the shared subject).
func TestSnapshotOwnConnectionOverTLS(t *testing.T) {
	st := stacktest.StartTLSStack(t, true)
	kp, err := nkeys.FromSeed(stacktest.AdminSeed(t, st.Svc))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(st.URL, nats.Secure(stacktest.ClientTLS(t, st.CA, st.ClientCert, st.ClientKey)),
		nats.Nkey(pub, kp.Sign), nats.CustomInboxPrefix(fleet.ControlInbox(pub)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	m, err := nc.Request(fleet.CtlSubject(pub, fleet.OpPresenceSnapshot), nil, 5*time.Second)
	if err != nil {
		t.Fatalf("snapshot on the operator's own subject: %v", err)
	}
	var snap fleet.PresenceSnapshot
	if err := json.Unmarshal(m.Data, &snap); err != nil || snap.Epoch == "" {
		t.Fatalf("snapshot: %v, %s", err, m.Data)
	}
}
