//go:build windows

package proc

import "os/exec"

// killProcessGroup keeps exec's default on Windows (the process is
// killed); WaitDelay bounds the wait for pipes a child may still hold.
func killProcessGroup(*exec.Cmd, string) {}

// killLeftovers does nothing on Windows (see killProcessGroup).
func killLeftovers(string) {}

// BaseEnv is the environment every program the agent runs gets on Windows: what
// programs there cannot start without.
func BaseEnv() []string {
	return lookEnv("SystemRoot", "SystemDrive", "windir", "PATH", "PATHEXT", "ComSpec", "TEMP", "TMP",
		"ProgramData", "ProgramFiles", "ProgramFiles(x86)", "CommonProgramFiles", "USERPROFILE", "NUMBER_OF_PROCESSORS")
}
