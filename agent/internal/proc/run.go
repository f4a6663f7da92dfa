// Package proc runs the programs the agent starts: operators' custom
// functions (agent/custom) and the system tools functions ask (dnf,
// PowerShell, softwareupdate). A program runs without a shell, with the
// environment it is given, stdout bounded and stderr's tail kept; when its
// context ends or stdout overflows, its whole process group is killed,
// and on Linux every process descending from it or carrying its run tag.
package proc

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// killGrace is how long Wait waits for the output pipes after the
// process was killed (a grandchild that left the process group may hold
// them open).
const killGrace = 2 * time.Second

// Cmd is one program to run.
type Cmd struct {
	Argv []string // the program and its arguments; no shell
	Env  []string // the whole environment (see [BaseEnv]); the run tag is added
	Dir  string   // the working directory; empty means the agent's
	// MaxStdout bounds stdout: past it the program is killed and
	// [Result.Overflow] is set.
	MaxStdout int64
	// StderrKeep is how much of stderr's end is kept.
	StderrKeep int
}

// Result is what a run left.
type Result struct {
	Stdout   []byte // at most MaxStdout bytes
	Stderr   string // the tail of stderr, at most StderrKeep bytes
	Overflow bool   // stdout passed MaxStdout; the program was killed
	Err      error  // from [exec.Cmd.Run]: an *exec.ExitError, a start error, or nil
}

// Run runs c until it exits, ctx ends or stdout overflows; in the last two
// cases the process group and the processes carrying the run tag are
// killed. The caller tells a timeout by ctx.Err() after Run returns.
func Run(ctx context.Context, c Cmd) Result {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	tag := runTag()
	cmd.Env = append(slices.Clip(c.Env), runTagVar+"="+tag)
	cmd.Dir = c.Dir
	stdout := &limitWriter{max: c.MaxStdout, onOverflow: cancel}
	stderr := &tailWriter{max: c.StderrKeep}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = killGrace
	killProcessGroup(cmd, tag)
	err := cmd.Run()
	if ctx.Err() != nil {
		// The command may have exited before its time was up and left a
		// child holding its output open: Cancel was not called for it.
		killLeftovers(tag)
	}
	return Result{Stdout: stdout.buf.Bytes(), Stderr: stderr.String(), Overflow: stdout.overflow, Err: err}
}

// runTagVar is set, to a random tag of its own, in each command's
// environment: when the command is killed, every process carrying its tag
// is killed too (where the agent can list processes' environments).
const runTagVar = "CC_RUN_ID"

// runTag returns a fresh random tag.
func runTag() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// limitWriter keeps up to max bytes; past that it sets overflow, calls
// onOverflow once (which kills the process) and discards the rest.
type limitWriter struct {
	max        int64
	buf        bytes.Buffer
	overflow   bool
	onOverflow func()
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if w.overflow {
		return len(p), nil
	}
	if room := w.max - int64(w.buf.Len()); int64(len(p)) > room {
		w.buf.Write(p[:room])
		w.overflow = true
		w.onOverflow()
		return len(p), nil
	}
	return w.buf.Write(p)
}

// tailWriter keeps the last max bytes written.
type tailWriter struct {
	max int
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	if len(w.buf) > 2*w.max {
		w.buf = append(w.buf[:0], w.buf[len(w.buf)-w.max:]...)
	}
	return len(p), nil
}

func (w *tailWriter) String() string { return Tail(string(w.buf), w.max) }

// Tail returns the last n bytes of s, on a UTF-8 boundary.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	for i := 0; i < len(s) && i < 4; i++ {
		if s[i]&0xC0 != 0x80 {
			return "…" + s[i:]
		}
	}
	return "…" + s
}

// OneLine makes text fit one header line: newlines become " | ", other
// control characters spaces.
func OneLine(s string) string {
	s = strings.TrimSpace(strings.ToValidUTF8(s, "\uFFFD"))
	s = strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", " | ")
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// lookEnv returns KEY=value for each of keys set in the agent's environment.
func lookEnv(keys ...string) []string {
	var out []string
	for _, k := range keys {
		if v, ok := os.LookupEnv(k); ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}
