package cli

import (
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestTLSFlags: cc-bench verifies a TLS-only broker with --tls-ca (or
// CC_TLS_CA) and works; with the wrong CA, or plain text to an address off
// this host, it fails with advice in its own flags.
func TestTLSFlags(t *testing.T) {
	st := stacktest.StartTLSStack(t, false)
	admin := st.Svc.AdminKeyPath()
	if _, stderr, code := cc(t, map[string]string{"CC_SERVER": st.URL, "CC_KEY": admin}, "whoami", "--tls-ca", st.CA); code != exitOK {
		t.Fatalf("--tls-ca: exit %d, stderr %q", code, stderr)
	}
	if _, stderr, code := cc(t, map[string]string{"CC_SERVER": st.URL, "CC_KEY": admin, "CC_TLS_CA": st.CA}, "servers"); code != exitOK {
		t.Fatalf("CC_TLS_CA: exit %d, stderr %q", code, stderr)
	}
	tests := []struct {
		name string
		vars map[string]string
		args []string
		want string
	}{
		{"wrong CA", map[string]string{"CC_SERVER": st.URL, "CC_KEY": admin}, []string{"--tls-ca", st.OtherCA, "servers"},
			"presented a certificate not signed by the CA in " + st.OtherCA + ": check that --tls-ca FILE (or CC_TLS_CA) names the CA"},
		{"no CA", map[string]string{"CC_SERVER": st.URL, "CC_KEY": admin}, []string{"servers"},
			"pass the CA that signed it with --tls-ca FILE (or CC_TLS_CA)"},
		{"plain text off this host", map[string]string{"CC_KEY": admin}, []string{"--server", "nats://127.0.0.1:4222,nats://10.0.0.5:4222", "servers"},
			"refusing to connect to nats://10.0.0.5:4222 in plain text: 10.0.0.5 is not this host (loopback)"},
		{"half a client certificate", map[string]string{"CC_SERVER": st.URL, "CC_KEY": admin}, []string{"--tls-cert", st.ClientCert, "servers"},
			"needs both its certificate file and its key file"},
	}
	for _, tt := range tests {
		_, stderr, code := cc(t, tt.vars, tt.args...)
		if code != exitFailure || !strings.Contains(stderr, tt.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 and %q", tt.name, code, stderr, tt.want)
		}
		if tt.name == "plain text off this host" && !strings.Contains(stderr, "--allow-plaintext") {
			t.Errorf("%s: no --allow-plaintext in %q", tt.name, stderr)
		}
	}
}

// TestAllowPlaintextFlag: the opt-out is accepted (here against the
// loopback broker, the only one a test may reach), as flag and variable.
func TestAllowPlaintextFlag(t *testing.T) {
	f := startFleet(t)
	if _, stderr, code := cc(t, f.env(), "whoami", "--allow-plaintext"); code != exitOK {
		t.Fatalf("--allow-plaintext: exit %d, stderr %q", code, stderr)
	}
	vars := f.env()
	vars["CC_ALLOW_PLAINTEXT"] = "1"
	if _, stderr, code := cc(t, vars, "whoami"); code != exitOK {
		t.Fatalf("CC_ALLOW_PLAINTEXT: exit %d, stderr %q", code, stderr)
	}
}
