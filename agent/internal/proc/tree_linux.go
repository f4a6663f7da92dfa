package proc

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// maxTreeRounds bounds how often killTree looks again for processes that
// appeared while it stopped the ones it found.
const maxTreeRounds = 64

// killTree kills every process that descends from root (0: none) or
// whose environment carries CC_RUN_ID=tag. A process group kill misses a
// child that called setsid, and a process whose parent exited is adopted
// by init and is no longer anyone's descendant: the tag, inherited
// through fork and exec, still names it (unless a script scrubbed its
// environment while its parent lived: that one is found by the walk).
//
// The processes found are stopped first (a stopped process cannot fork)
// and the search repeated until it finds nothing new; then all are killed.
//
// Why not a child subreaper: the agent would have to reap every orphan
// its children leave, and a reaper waiting for any child races os/exec,
// whose Wait then fails. Why not a cgroup: it needs a delegated cgroup
// tree, which an agent in a container or without systemd does not have.
func killTree(root int, tag string) {
	needle := []byte(runTagVar + "=" + tag + "\x00")
	self := os.Getpid()
	stopped := map[int]bool{}
	for range maxTreeRounds {
		found := map[int]bool{}
		if root > 0 {
			descendants(root, found)
		}
		tagged(needle, found)
		delete(found, self)
		delete(found, 0)
		fresh := 0
		for pid := range found {
			if !stopped[pid] {
				stopped[pid] = true
				_ = syscall.Kill(pid, syscall.SIGSTOP)
				fresh++
			}
		}
		if fresh == 0 {
			break
		}
	}
	for pid := range stopped {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// descendants adds pid's children, grandchildren and so on to out, read
// from /proc/<pid>/task/<tid>/children.
func descendants(pid int, out map[int]bool) {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(b)) {
			child, err := strconv.Atoi(field)
			if err != nil || out[child] {
				continue
			}
			out[child] = true
			descendants(child, out)
		}
	}
}

// tagged adds every process whose environment holds needle (and what
// descends from it) to out. Processes the agent may not read are skipped:
// a command runs as the agent's user, so its own are readable.
func tagged(needle []byte, out map[int]bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	inner := append([]byte{0}, needle...)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || out[pid] {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !(bytes.HasPrefix(env, needle) || bytes.Contains(env, inner)) {
			continue
		}
		out[pid] = true
		descendants(pid, out)
	}
}
