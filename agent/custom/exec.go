package custom

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/agent/internal/proc"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// stderrKeep is how much of a command's stderr is kept (its tail), and
// stderrInError how much of that an error description quotes.
const (
	stderrKeep    = 64 << 10
	stderrInError = 1 << 10
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

// NewFunction returns the function that runs def, which must come
// from [ReadDefinition] or [LoadDefinitions] (validated, defaults filled).
// env gives the machine id passed to the command as CC_MACHINE_ID.
func NewFunction(def Definition, env *functions.Env) functions.Function {
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

func (f *customFunction) Spec() functions.Spec { return f.def.Spec() }

// Call runs the command: no shell, a scrubbed environment, stdin empty,
// bounded in time (504), output (413) and concurrency (503). On timeout or
// overflow the whole process group is killed, and on Linux every process
// descending from the command or carrying its run tag (setsid'd children
// and orphans too).
func (f *customFunction) Call(ctx context.Context, args functions.Args) (any, error) {
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
	res := proc.Run(ctx, proc.Cmd{Argv: argv, Env: f.environ(), Dir: f.def.Dir, MaxStdout: f.def.MaxOutputBytes, StderrKeep: stderrKeep})
	switch {
	case res.Overflow:
		return nil, fleet.Errorf(fleet.CodeTooLarge, "%s wrote more than %d bytes to stdout (its max_output_bytes); the process was killed", f.def.Name, f.def.MaxOutputBytes)
	case ctx.Err() != nil:
		return nil, fleet.Errorf(fleet.CodeTimeout, "%s did not finish within %s; the process was killed", f.def.Name, timeout)
	}
	err = res.Err
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		return nil, fleet.Errorf(fleet.CodeInternal, "%s exited with status %d: %s", f.def.Name, exitErr.ExitCode(), proc.OneLine(proc.Tail(res.Stderr, stderrInError)))
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist):
		return nil, fleet.Errorf(fleet.CodeUnavailable, "%s: program %s not found on this machine", f.def.Name, argv[0])
	case err != nil:
		return nil, fleet.Errorf(fleet.CodeInternal, "%s: cannot run %s: %v", f.def.Name, argv[0], err)
	}
	return f.result(res.Stdout, res.Stderr)
}

// result passes JSON stdout through or wraps text, as the output mode says.
func (f *customFunction) result(stdout []byte, stderr string) (any, error) {
	trimmed := bytes.TrimSpace(stdout)
	isJSON := len(trimmed) > 0 && json.Valid(trimmed)
	switch f.def.Output {
	case OutputJSON:
		if !isJSON {
			return nil, fleet.Errorf(fleet.CodeInternal, "%s: stdout is not JSON (its output is \"json\"): %s", f.def.Name, proc.OneLine(proc.Tail(string(stdout), stderrInError)))
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
func (f *customFunction) argv(args functions.Args) ([]string, error) {
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
	env := proc.BaseEnv()
	env = append(env, "CC_MACHINE_ID="+f.machine, "CC_FUNCTION="+f.def.Name)
	for k, v := range f.def.Env {
		env = append(env, k+"="+v)
	}
	return env
}
