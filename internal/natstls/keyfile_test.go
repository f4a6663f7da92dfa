package natstls_test

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/internal/natstls"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestLoadKeyPairRefusesReadableKey: a TLS key others may read is refused,
// naming the file and the chmod; at mode 0600 it loads.
func TestLoadKeyPairRefusesReadableKey(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no mode bits on Windows")
	}
	certs := stacktest.TLSFiles(t)
	if _, err := natstls.LoadKeyPair(certs.Cert, certs.Key); err != nil {
		t.Fatalf("key at 0600: %v", err)
	}
	if err := os.Chmod(certs.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := natstls.LoadKeyPair(certs.Cert, certs.Key)
	if err == nil || !strings.Contains(err.Error(), certs.Key) || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("key at 0644: got %v, want a refusal naming the file and chmod 600", err)
	}
}
