//go:build !windows

package proc

import (
	"os/exec"
	"syscall"
)

// killProcessGroup starts the command in a process group of its own and
// makes cancelling it kill the whole group and then every process that
// descends from it or carries its run tag (see killTree), so a script's
// children die with it, those that left the group (setsid) too.
func killProcessGroup(cmd *exec.Cmd, tag string) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		killTree(cmd.Process.Pid, tag)
		return err
	}
}

// killLeftovers kills what still carries the run tag after the command
// was waited for (its pid may be reused now, so it is not walked).
func killLeftovers(tag string) { killTree(0, tag) }

// BaseEnv is the environment every program the agent runs gets on Unix.
func BaseEnv() []string {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	return append(env, lookEnv("HOME", "TZ")...)
}
