package functions

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/internal/proc"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// toolTimeout bounds one run of a system tool (dnf, yum, PowerShell,
// softwareupdate); the call's own deadline (cc-agent --call-timeout) may
// end it sooner.
const toolTimeout = 25 * time.Second

// toolOutputLimit bounds what a system tool may print, and toolStderrKeep
// how much of its stderr's end an error quotes.
const (
	toolOutputLimit = 8 << 20
	toolStderrKeep  = 1 << 10
)

// runTool runs argv without a shell, with the scrubbed environment of
// custom functions ([proc.BaseEnv]), bounded by [toolTimeout] and [toolOutputLimit]; its
// process group is killed on either. It returns stdout, and an error
// carrying the stderr tail when the tool failed.
func runTool(ctx context.Context, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, toolTimeout)
	defer cancel()
	res := proc.Run(ctx, proc.Cmd{Argv: argv, Env: proc.BaseEnv(), MaxStdout: toolOutputLimit, StderrKeep: toolStderrKeep})
	switch {
	case res.Overflow:
		return nil, fmt.Errorf("%s printed more than %d bytes; it was killed", argv[0], toolOutputLimit)
	case ctx.Err() != nil:
		return nil, fleet.Errorf(fleet.CodeTimeout, "%s did not finish in time (at most %s, or the call's deadline); it was killed", argv[0], toolTimeout)
	case res.Err != nil:
		var ee *exec.ExitError
		if errors.As(res.Err, &ee) {
			return res.Stdout, &toolError{tool: argv[0], code: ee.ExitCode(), stderr: proc.OneLine(res.Stderr)}
		}
		return nil, res.Err
	}
	return res.Stdout, nil
}

// toolError is a tool that exited non-zero.
type toolError struct {
	tool   string
	code   int
	stderr string
}

func (e *toolError) Error() string {
	return fmt.Sprintf("%s exited with status %d: %s", e.tool, e.code, e.stderr)
}

// toolCache keeps a slow tool's parsed answer while a signature (of the
// package database) is unchanged, for at most ttl.
type toolCache struct {
	ttl time.Duration
	now func() time.Time // nil means time.Now

	mu  sync.Mutex
	sig string
	at  time.Time
	val any
}

// get returns the cached value for sig, or computes it with fill. Errors
// are not cached.
func (c *toolCache) get(sig string, fill func() (any, error)) (any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	if c.val != nil && c.sig == sig && now().Sub(c.at) < c.ttl {
		return c.val, nil
	}
	v, err := fill()
	if err != nil {
		return nil, err
	}
	c.sig, c.at, c.val = sig, now(), v
	return v, nil
}
