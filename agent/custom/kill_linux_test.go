package custom

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions/functionstest"
)

// running reports whether pid is a live process (a zombie is dead: it
// waits only for its parent, or init, to collect its status).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestCustomFunctionSetsidChildIsKilled: a script starts one grandchild
// that leaves the process group with setsid while the script waits, and
// one that setsid's from a subshell that exits at once (so init adopts
// it). The process group kill missed both; after the timeout both are
// gone.
func TestCustomFunctionSetsidChildIsKilled(t *testing.T) {
	dir := t.TempDir()
	script := `setsid sh -c 'echo $$ > "$0"; exec sleep 300' "$0/kept" &
(setsid sh -c 'echo $$ > "$0"; exec sleep 300' "$0/orphan" &)
while [ ! -s "$0/kept" ] || [ ! -s "$0/orphan" ]; do sleep 0.01; done
echo > "$0/ready"
sleep 300`
	s := customSet(t, fmt.Sprintf(`{"name":"escape","timeout":"2s","command":["/bin/sh","-c",%q,%q]}`, script, dir))
	_, err := s.Call(t.Context(), "escape", nil)
	functionstest.WantCode(t, err, 504, "killed")
	if _, err := os.Stat(filepath.Join(dir, "ready")); err != nil {
		t.Fatalf("the script did not start both grandchildren within its timeout: %v", err)
	}
	for _, f := range []string{"kept", "orphan"} {
		pid := readPid(t, filepath.Join(dir, f))
		t.Cleanup(func() {
			if running(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL) // not to outlive a failed test
			}
		})
		deadline := time.Now().Add(5 * time.Second)
		for running(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // SIGKILL is delivered asynchronously
		}
		if running(pid) {
			t.Errorf("the %s setsid grandchild %d still runs after the timeout", f, pid)
		}
	}
}
