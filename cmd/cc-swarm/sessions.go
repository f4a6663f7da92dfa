package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/natstls"
	"github.com/commandcontrol/commandcontrol/swarm"
)

// sessionOpts are cc-swarm's session flags.
type sessionOpts struct {
	n, first, maxSessions, conc int
	app, net, platform, idsFile string
	server, key, tlsCA          string
	baseline, allowPlain        bool
}

// runSessions simulates so.n sessions until ctx ends, printing
// "connecting N" and then "ready N SECONDS" (cc-perf reads them).
func runSessions(ctx context.Context, so sessionOpts, stdout, stderr io.Writer) error {
	if so.n <= 0 {
		return errors.New("--sessions-baseline needs --sessions N (how many responders)")
	}
	d, err := natstls.Config{CAFile: so.tlsCA, AllowPlaintext: so.allowPlain}.Decide(so.server)
	if err != nil {
		return err
	}
	ss, err := swarm.NewSessions(swarm.SessionsConfig{URL: so.server, TLS: d.TLS, N: so.n, App: so.app, Platform: so.platform,
		Net: so.net, First: so.first, Concurrency: so.conc, Baseline: so.baseline})
	if err != nil {
		return err
	}
	defer ss.Close()
	if so.key != "" && !so.baseline {
		var conn []bench.Option
		if so.tlsCA != "" {
			conn = append(conn, bench.WithTLSCA(so.tlsCA))
		}
		if so.allowPlain {
			conn = append(conn, bench.WithPlaintext())
		}
		created, err := ensureApp(ctx, so, conn...)
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(stderr, "cc-swarm: registered app %s (public, function %s)\n", so.app, swarm.FnLatencyCheck)
		}
	} else if !so.baseline {
		fmt.Fprintf(stderr, "cc-swarm: no --key: assuming app %s is registered already, public, with function %s\n", so.app, swarm.FnLatencyCheck)
	}
	if so.idsFile != "" {
		if err := writeIDs(so.idsFile, ss, so.first); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "connecting %d\n", so.n)
	start := time.Now()
	if err := ss.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ready %d %.3f\n", ss.Connected(), time.Since(start).Seconds())
	<-ctx.Done()
	fmt.Fprintf(stderr, "cc-swarm: %d calls answered, %d refused\n", ss.Answered(), ss.Refused())
	return nil
}

// ensureApp registers the app as public with latencyCheck; one that
// exists already is used as it is. It reports whether it registered it.
func ensureApp(ctx context.Context, so sessionOpts, conn ...bench.Option) (bool, error) {
	c, err := bench.Connect(so.server, append(conn, bench.WithSeedFile(so.key), bench.WithName("cc-swarm (operator)"))...)
	if err != nil {
		return false, err
	}
	defer c.Close()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var created fleet.AppCreated
	err = c.Control(rctx, fleet.OpAppsAdd, fleet.AppRequest{Name: so.app, Functions: []string{swarm.FnLatencyCheck}, Public: true, MaxSessions: so.maxSessions}, &created)
	if fleet.CodeOf(err) == fleet.CodeConflict {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("register app %s: %w (or register it yourself: cc-bench apps add %s --fn %s --public)", so.app, err, so.app, swarm.FnLatencyCheck)
	}
	return true, nil
}

func writeIDs(path string, ss *swarm.Sessions, first int) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--ids: %w", err)
	}
	w := bufio.NewWriter(f)
	for i, id := range ss.IDs() {
		fmt.Fprintf(w, "%d %s %s\n", first+i, id, ss.Addr(i))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("--ids: %w", err)
	}
	return f.Close()
}
