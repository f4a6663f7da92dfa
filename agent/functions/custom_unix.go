//go:build !windows

package functions

import (
	"os/exec"
	"syscall"
)

// killProcessGroup starts the command in a process group of its own and
// makes cancelling it kill the whole group, so a script's children die
// with it.
func killProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}

// baseEnv is the environment every custom function gets on Unix.
func baseEnv() []string {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	return append(env, lookEnv("HOME", "TZ")...)
}
