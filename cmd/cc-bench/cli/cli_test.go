package cli

import (
	"net"
	"os"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

func TestUsageErrors(t *testing.T) {
	vars := map[string]string{"CC_KEY": "/nonexistent/key.nk"}
	tests := []struct {
		args    []string
		wantErr string
	}{
		{nil, "Usage: cc-bench"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"serv"}, "did you mean servers?"},
		{[]string{"--nope"}, "flag provided but not defined"},
		{[]string{"call"}, "call needs exactly one FUNCTION"},
		{[]string{"call", "a", "b"}, "call needs exactly one FUNCTION"},
		{[]string{"call", "a.b"}, "function name"},
		{[]string{"call", "x", "--filter", "load1 >"}, `--filter: filter "load1 >", column 8`},
		{[]string{"call", "x", "--where", "role"}, `selector term "role": want key=value`},
		{[]string{"call", "x", "--arg", "novalue"}, `--arg "novalue": want key=value`},
		{[]string{"call", "x", "--where", "a=b", "--machine", "m"}, "either --machine or --where"},
		{[]string{"call", "x", "--timeout", "soon"}, "invalid value"},
		{[]string{"call", "x", "--timeout", "-1s"}, `invalid value "-1s" for flag -timeout: want a duration above 0`},
		{[]string{"--timeout", "0s", "servers"}, `invalid value "0s" for flag -timeout: want a duration above 0`},
		{[]string{"call", "x", "--machine", "bad id!"}, `--machine: machine id "bad id!"`},
		{[]string{"machines", "accept", "bad id!"}, `machine id "bad id!" has`},
		{[]string{"servers", "role=web"}, "use --where role=web"},
		{[]string{"servers", "--where", "=x"}, "key before"},
		{[]string{"watch", "extra"}, "watch takes no arguments"},
		{[]string{"machines"}, "machines needs a subcommand"},
		{[]string{"machines", "explode"}, `unknown machines subcommand "explode"`},
		{[]string{"machines", "accept"}, "accept needs ID"},
		{[]string{"machines", "add", "10.0.0.1_a"}, "--pubkey KEY is required"},
		{[]string{"machines", "add", "10.0.0.1_a", "--pubkey", "SUAxxx"}, "not a seed"},
		{[]string{"machines", "add", "10.0.0.1_a", "--pubkey", "Ubad"}, "not a public user nkey"},
		{[]string{"machines", "add", "10.0.0.1_a", "--key", "UDVEU3DD4KOFECV66VIHWEZOYX4ZKR3WV27L464SIIPOU2IUI3JCYSJF"}, "--key is your own nkey seed FILE; give the public key to register with --pubkey UDVEU3DD4K"},
		{[]string{"machines", "accept", "a", "b", "--pubkey", "UX"}, "accept that machine alone"},
		{[]string{"machines", "label", "10.0.0.1_a"}, "usage: cc-bench machines label"},
		{[]string{"machines", "label", "10.0.0.1_a", "novalue"}, `label "novalue": want key=value`},
		{[]string{"operators", "add", "bob", "--pubkey", "UAAA"}, "not a public user nkey"},
		{[]string{"operators", "add", "bob"}, "--pubkey KEY is required"},
		{[]string{"operators", "add", "b.b", "--pubkey", "U"}, "operator name"},
		{[]string{"operators", "add", "bob", "--key", "UDVEU3DD4KOFECV66VIHWEZOYX4ZKR3WV27L464SIIPOU2IUI3JCYSJF"}, "give the public key to register with --pubkey"},
		{[]string{"operators", "rm"}, "rm needs NAME"},
		{[]string{"whoami", "me"}, "whoami takes no arguments"},
	}
	for _, tt := range tests {
		_, stderr, code := cc(t, vars, tt.args...)
		if code != exitUsage || !strings.Contains(stderr, tt.wantErr) {
			t.Errorf("cc-bench %q: exit %d, stderr %q; want exit 2 and %q", tt.args, code, stderr, tt.wantErr)
		}
	}
}

func TestOperatorsAddRoleChecked(t *testing.T) {
	_, pub := operatorKey(t, 9)
	_, stderr, code := cc(t, nil, "operators", "add", "bob", "--pubkey", pub, "--role", "god")
	if code != exitUsage || !strings.Contains(stderr, `--role "god": want admin or viewer`) {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestHelp(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"help", []string{"--help"}},
		{"help_call", []string{"call", "--help"}},
		{"help_machines", []string{"help", "machines"}},
		{"help_machines_add", []string{"machines", "add", "-h"}},
	} {
		stdout, stderr, code := cc(t, nil, tt.args...)
		if code != exitOK || stderr != "" {
			t.Errorf("%q: exit %d, stderr %q", tt.args, code, stderr)
		}
		golden(t, tt.name, stdout)
	}
	for _, cmd := range []string{"servers", "watch", "operators", "whoami"} {
		stdout, _, code := cc(t, nil, cmd, "--help")
		if code != exitOK || !strings.Contains(stdout, "Usage: cc-bench "+cmd) || !strings.Contains(stdout, "Examples:") {
			t.Errorf("%s --help: exit %d:\n%s", cmd, code, stdout)
		}
	}
}

func TestConnectErrors(t *testing.T) {
	f := startFleet(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "nats://" + l.Addr().String()
	l.Close()
	_, strangerPub := operatorKey(t, 3)
	stranger := t.TempDir() + "/stranger.nk"
	seed, _ := operatorKey(t, 3)
	writeFile(t, stranger, seed)
	// A copy of the admin's seed that others can read is refused before
	// it is used, as cc-control and cc-agent refuse theirs.
	readable := t.TempDir() + "/admin-copy.nk"
	adminSeed, err := os.ReadFile(f.adminKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, readable, adminSeed)
	if err := os.Chmod(readable, 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		vars    map[string]string
		wantErr string
	}{
		{"no key", map[string]string{"CC_SERVER": f.url}, "no operator key: pass --key FILE or set CC_KEY (the control service printed the admin key path"},
		{"missing file", map[string]string{"CC_SERVER": f.url, "CC_KEY": "/nonexistent.nk"}, "operator key file /nonexistent.nk does not exist"},
		{"refused", map[string]string{"CC_SERVER": closed, "CC_KEY": f.adminKey}, "cannot reach the broker at " + closed + ": is cc-control running?"},
		{"readable key", map[string]string{"CC_SERVER": f.url, "CC_KEY": readable}, "operator key file " + readable + " has mode 0644 (-rw-r--r--): a key must be readable by its owner only; run: chmod 600 " + readable},
		{"unknown key", map[string]string{"CC_SERVER": f.url, "CC_KEY": stranger}, "the broker at " + f.url + " refused this key: is it registered as an operator? An admin adds it with: cc-bench operators add NAME --pubkey " + strangerPub},
	}
	for _, tt := range tests {
		_, stderr, code := cc(t, tt.vars, "servers")
		if code != exitFailure || !strings.Contains(stderr, tt.wantErr) {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 and %q", tt.name, code, stderr, tt.wantErr)
		}
	}
	// --server and --key flags override the environment, after the command too.
	_, stderr, code := cc(t, map[string]string{"CC_SERVER": closed}, "servers", "--server", f.url, "--key", f.adminKey)
	if code != exitOK {
		t.Errorf("flags after the command: exit %d, %s", code, stderr)
	}
}

// TestNoControlService: cc-control is down. With the broker it embeds,
// nothing answers at all; with a stand-alone broker, the broker refuses
// every new connection (the callout fails closed), a registered key too,
// at its auth timeout: cc-bench says the control service is down, not
// that the key may be unknown.
func TestNoControlService(t *testing.T) {
	f := startFleet(t)
	f.svc.Close()
	_, stderr, code := cc(t, f.env(), "servers")
	if code != exitFailure || !strings.Contains(stderr, "is cc-control running?") {
		t.Errorf("embedded broker: exit %d, stderr %q", code, stderr)
	}

	data := t.TempDir()
	b := stacktest.StartBroker(t, data)
	svc := stacktest.StartControl(t, stacktest.WithDataDir(data), stacktest.WithBroker(b.ClientURL()))
	vars := map[string]string{"CC_SERVER": b.ClientURL(), "CC_KEY": svc.AdminKeyPath()}
	if _, stderr, code := cc(t, vars, "servers"); code != exitOK {
		t.Fatalf("stand-alone broker, cc-control up: exit %d, stderr %q", code, stderr)
	}
	svc.Close()
	for _, args := range [][]string{{"servers"}, {"call", "current-load"}, {"--json", "machines", "ls"}} {
		_, stderr, code = cc(t, vars, args...)
		want := "cc-bench: the broker at " + b.ClientURL() + " is up but no control service answered: cc-control is down or not connected to this broker\n"
		if code != exitFailure || !strings.HasPrefix(stderr, want) || strings.Contains(stderr, "registered") {
			t.Errorf("stand-alone broker, cc-bench %q: exit %d, stderr %q", args, code, stderr)
		}
	}
}
