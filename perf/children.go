package perf

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// perChild bounds the agents one cc-swarm process runs: a process may not
// hold more than the open-file limit (20,000 here, which an unprivileged
// container cannot raise), and each agent is one socket — two while it
// reconnects, since nats.go keeps the dead socket until the new one is up.
const perChild = 5000

// swarmProcs are cc-swarm child processes.
type swarmProcs struct{ cmds []*exec.Cmd }

// spawnSwarm starts cc-swarm children for n agents (or baseline
// responders) against url and waits until all have connected. connect is
// the longest time a child took to connect its share.
func spawnSwarm(ctx context.Context, bin, url, key string, n int, prefix string, baseline bool) (*swarmProcs, time.Duration, error) {
	return spawnSwarmAt(ctx, bin, func(int) string { return url }, key, n, prefix, baseline)
}

// spawnSwarmAt is spawnSwarm with child i given broker URL (list) url(i).
func spawnSwarmAt(ctx context.Context, bin string, url func(child int) string, key string, n int, prefix string, baseline bool) (*swarmProcs, time.Duration, error) {
	var children [][]string
	for i := 0; i*perChild < n; i++ {
		share := min(perChild, n-i*perChild)
		args := []string{"--server", url(i), "--agents", strconv.Itoa(share), "--prefix", fmt.Sprintf("%s%d-", prefix, i)}
		if baseline {
			args = append(args, "--baseline")
		} else {
			args = append(args, "--key", key)
		}
		children = append(children, args)
	}
	return spawnChildren(ctx, bin, children, os.Stderr)
}

// spawnChildren starts one cc-swarm per argument list and waits, at most
// 5 minutes, until each has said "ready" (connected its share). connect
// is the longest time a child took.
func spawnChildren(ctx context.Context, bin string, children [][]string, stderr io.Writer) (*swarmProcs, time.Duration, error) {
	p := &swarmProcs{}
	type ready struct {
		secs float64
		err  error
	}
	done := make(chan ready, len(children))
	// Each child registers its members (one machines.import) before it
	// connects them: the next child starts once the one before said it
	// is connecting, so the control service imports one share at a time
	// rather than every share at once (on a JetStream cluster sharing two
	// cores with the fleet, ten imports at once outwaited their writes).
	registered := make(chan struct{}, len(children))
	for i, args := range children {
		if i > 0 && registers(children[i-1]) {
			select {
			case <-registered:
			case r := <-done:
				done <- r // a child ended early: the loop below reports it
			case <-time.After(2 * time.Minute):
			case <-ctx.Done():
				p.stop()
				return nil, 0, ctx.Err()
			}
		}
		cmd := exec.Command(bin, args...)
		cmd.Stderr = stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			p.stop()
			return nil, 0, err
		}
		if err := cmd.Start(); err != nil {
			p.stop()
			return nil, 0, fmt.Errorf("start %s: %w", bin, err)
		}
		p.cmds = append(p.cmds, cmd)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "connecting ") && registers(args) {
					registered <- struct{}{}
				}
				if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "ready" {
					s, _ := strconv.ParseFloat(f[2], 64)
					done <- ready{secs: s}
					// Drain the rest, so the child never blocks writing.
					_, _ = io.Copy(io.Discard, out)
					return
				}
			}
			done <- ready{err: fmt.Errorf("cc-swarm %s exited before all its members connected (its errors are above)", strings.Join(args, " "))}
		}()
	}
	var longest float64
	timeout := time.After(5 * time.Minute)
	for range p.cmds {
		select {
		case r := <-done:
			if r.err != nil {
				p.stop()
				return nil, 0, r.err
			}
			longest = max(longest, r.secs)
		case <-timeout:
			p.stop()
			return nil, 0, fmt.Errorf("cc-swarm children not connected after 5 minutes")
		case <-ctx.Done():
			p.stop()
			return nil, 0, ctx.Err()
		}
	}
	return p, time.Duration(longest * float64(time.Second)), nil
}

// registers reports whether a cc-swarm child with args registers agents
// (with --key) before it connects them, saying "connecting N" then.
func registers(args []string) bool {
	return slices.Contains(args, "--agents") && slices.Contains(args, "--key")
}

// stop ends the children and waits for them.
func (p *swarmProcs) stop() {
	for _, c := range p.cmds {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range p.cmds {
		t := time.AfterFunc(10*time.Second, func() { _ = c.Process.Kill() })
		_ = c.Wait()
		t.Stop()
	}
	p.cmds = nil
}
