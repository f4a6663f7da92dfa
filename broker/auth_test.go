package broker_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/broker"
)

// TestLoadAuthKeys (was controlsvc TestLoadBrokerAuth): the file the
// control service writes is read back, with or without an xkey; bad
// content and a missing file are refused by name.
func TestLoadAuthKeys(t *testing.T) {
	dir := t.TempDir()
	good := validAuth(t)
	noX := good
	noX.CalloutXKey = ""
	b, _ := json.Marshal(noX)
	p := filepath.Join(dir, "noxkey.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := broker.LoadAuthKeys(p)
	if err != nil || got != noX {
		t.Fatalf("without xkey: got %+v, %v; want %+v", got, err, noX)
	}

	bad := good
	bad.SysUser = good.CalloutIssuer
	badJSON, _ := json.Marshal(bad)
	tests := []struct {
		name, content, want string
	}{
		{"not json", "{", "broker auth file"},
		{"empty object", "{}", "callout_issuer"},
		{"wrong kind", string(badJSON), "sys_user"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name+".json")
			if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := broker.LoadAuthKeys(p); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	_, err = broker.LoadAuthKeys(filepath.Join(dir, "missing.json"))
	if err == nil || !strings.Contains(err.Error(), broker.AuthFile) {
		t.Fatalf("missing file: got %v, want an error naming %s", err, broker.AuthFile)
	}
}
