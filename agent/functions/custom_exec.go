package functions

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// stderrKeep is how much of a command's stderr is kept (its tail), and
// stderrInError how much of that an error description quotes.
const (
	stderrKeep    = 64 << 10
	stderrInError = 1 << 10
	// killGrace is how long Wait waits for the output pipes after the
	// process was killed (a grandchild that left the process group may
	// hold them open).
	killGrace = 2 * time.Second
)

// CommandOutput is the reply of a custom function whose stdout is not
// passed through as JSON.
type CommandOutput struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exit_code"`
}

// customFunction runs a [Definition].
type customFunction struct {
	def      Definition
	machine  string
	sem      chan struct{}
	patterns map[string]*regexp.Regexp
}

// NewCustomFunction returns the function that runs def, which must come
// from [ReadDefinition] or [LoadDefinitions] (validated, defaults filled).
// env gives the machine id passed to the command as CC_MACHINE_ID.
func NewCustomFunction(def Definition, env *Env) Function {
	f := &customFunction{def: def, sem: make(chan struct{}, def.MaxConcurrent), patterns: map[string]*regexp.Regexp{}}
	if env != nil {
		f.machine = env.MachineID
	}
	for _, a := range def.Args {
		if a.Pattern != "" {
			f.patterns[a.Name] = regexp.MustCompile("^(?:" + a.Pattern + ")$")
		}
	}
	return f
}

func (f *customFunction) Spec() Spec { return f.def.Spec() }

// Call runs the command: no shell, a scrubbed environment, stdin empty,
// bounded in time (504), output (413) and concurrency (503). On timeout or
// overflow the whole process group is killed, and on Linux every process
// descending from the command or carrying its run tag (setsid'd children
// and orphans too).
func (f *customFunction) Call(ctx context.Context, args Args) (any, error) {
	select {
	case f.sem <- struct{}{}:
		defer func() { <-f.sem }()
	default:
		return nil, fleet.Errorf(fleet.CodeUnavailable, "%s is already running %d times (its max_concurrent); retry later", f.def.Name, f.def.MaxConcurrent)
	}
	argv, err := f.argv(args)
	if err != nil {
		return nil, err
	}
	timeout := time.Duration(f.def.Timeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	tag := runTag()
	cmd.Env = append(f.environ(), runTagVar+"="+tag)
	cmd.Dir = f.def.Dir
	stdout := &limitWriter{max: f.def.MaxOutputBytes, onOverflow: cancel}
	stderr := &tailWriter{max: stderrKeep}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = killGrace
	killProcessGroup(cmd, tag)
	err = cmd.Run()
	if ctx.Err() != nil {
		// The command may have exited before its time was up and left a
		// child holding its output open: Cancel was not called for it.
		killLeftovers(tag)
	}
	switch {
	case stdout.overflow:
		return nil, fleet.Errorf(fleet.CodeTooLarge, "%s wrote more than %d bytes to stdout (its max_output_bytes); the process was killed", f.def.Name, f.def.MaxOutputBytes)
	case ctx.Err() != nil:
		return nil, fleet.Errorf(fleet.CodeTimeout, "%s did not finish within %s; the process was killed", f.def.Name, timeout)
	}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		return nil, fleet.Errorf(fleet.CodeInternal, "%s exited with status %d: %s", f.def.Name, exitErr.ExitCode(), oneLine(tail(stderr.String(), stderrInError)))
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist):
		return nil, fleet.Errorf(fleet.CodeUnavailable, "%s: program %s not found on this machine", f.def.Name, argv[0])
	case err != nil:
		return nil, fleet.Errorf(fleet.CodeInternal, "%s: cannot run %s: %v", f.def.Name, argv[0], err)
	}
	return f.result(stdout.buf.Bytes(), stderr.String())
}

// runTagVar is set, to a random tag of its own, in each custom command's
// environment: when the command is killed, every process carrying its tag
// is killed too (where the agent can list processes' environments).
const runTagVar = "CC_RUN_ID"

// runTag returns a fresh random tag.
func runTag() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// result passes JSON stdout through or wraps text, as the output mode says.
func (f *customFunction) result(stdout []byte, stderr string) (any, error) {
	trimmed := bytes.TrimSpace(stdout)
	isJSON := len(trimmed) > 0 && json.Valid(trimmed)
	switch f.def.Output {
	case OutputJSON:
		if !isJSON {
			return nil, fleet.Errorf(fleet.CodeInternal, "%s: stdout is not JSON (its output is \"json\"): %s", f.def.Name, oneLine(tail(string(stdout), stderrInError)))
		}
		return json.RawMessage(trimmed), nil
	case OutputAuto:
		if isJSON && (trimmed[0] == '{' || trimmed[0] == '[') {
			return json.RawMessage(trimmed), nil
		}
	}
	return &CommandOutput{Stdout: strings.ToValidUTF8(string(stdout), "\uFFFD"), Stderr: strings.ToValidUTF8(stderr, "\uFFFD")}, nil
}

// argv substitutes the arguments into the command. Each placeholder is
// replaced by the value's text; the element stays one argument. An element
// naming an argument the call did not give is left out.
func (f *customFunction) argv(args Args) ([]string, error) {
	for name, re := range f.patterns {
		if v, ok := args[name]; ok && !re.MatchString(argText(v)) {
			return nil, fleet.Errorf(fleet.CodeBadRequest, "%s: argument %q: %q does not match %s", f.def.Name, name, argText(v), re)
		}
	}
	out := make([]string, 0, len(f.def.Command))
	for _, el := range f.def.Command {
		missing := false
		s := placeholder.ReplaceAllStringFunc(el, func(m string) string {
			name := placeholder.FindStringSubmatch(m)[1]
			v, ok := args[name]
			if !ok {
				missing = true
				return ""
			}
			return argText(v)
		})
		if !missing {
			out = append(out, s)
		}
	}
	return out, nil
}

// argText formats an argument value for a command line.
func argText(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	return fmt.Sprint(v)
}

// environ is the command's environment: a fixed PATH and locale, what the
// platform cannot run without, CC_MACHINE_ID and CC_FUNCTION, and the
// definition's env. Nothing else of the agent's environment is passed on.
func (f *customFunction) environ() []string {
	env := baseEnv()
	env = append(env, "CC_MACHINE_ID="+f.machine, "CC_FUNCTION="+f.def.Name)
	for k, v := range f.def.Env {
		env = append(env, k+"="+v)
	}
	return env
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

func (w *tailWriter) String() string { return tail(string(w.buf), w.max) }

// tail returns the last n bytes of s, on a UTF-8 boundary.
func tail(s string, n int) string {
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

// oneLine makes text fit one header line: newlines become " | ", other
// control characters spaces.
func oneLine(s string) string {
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
