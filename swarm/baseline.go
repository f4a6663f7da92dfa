package swarm

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats.go"
)

// BaselineSubject is what baseline responders answer.
const BaselineSubject = "raw.all.current-load"

// Baseline is the benchmarks' point of comparison: the same fan-out with
// plain nats.go and no framework. Each responder is a plain connection
// (no auth, no micro) answering BaselineSubject by running the same
// current-load handler on the same synthetic hosts as a swarm member.
type Baseline struct {
	conns []*nats.Conn
	dir   string
}

// StartBaseline connects n plain responders to url.
func StartBaseline(ctx context.Context, url string, n int) (*Baseline, error) {
	dir, err := os.MkdirTemp("", "cc-baseline-")
	if err != nil {
		return nil, err
	}
	b := &Baseline{conns: make([]*nats.Conn, n), dir: dir}
	roots, err := WriteHosts(dir)
	if err != nil {
		b.Close()
		return nil, err
	}
	sets := make([]*functions.Set, len(roots))
	for i, r := range roots {
		sets[i] = functions.New(&functions.Env{Root: r})
	}
	sem := make(chan struct{}, 512)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs error
	srcs := 1 + n/20000
	loop := loopbackOnly(url)
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			nc, err := baselineResponder(url, sets[i%len(sets)], loop, i%srcs)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = errors.Join(errs, err)
				return
			}
			b.conns[i] = nc
		})
	}
	wg.Wait()
	if errs == nil {
		errs = ctx.Err()
	}
	if errs != nil {
		b.Close()
		return nil, errs
	}
	return b, nil
}

func baselineResponder(url string, fns *functions.Set, loopback bool, src int) (*nats.Conn, error) {
	opts := []nats.Option{nats.ReconnectBufSize(64 << 10), nats.Timeout(30 * time.Second)}
	if loopback {
		d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+src))}}
		opts = append(opts, nats.SetCustomDialer(d))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, err
	}
	_, err = nc.Subscribe(BaselineSubject, func(m *nats.Msg) {
		res, err := fns.Call(context.Background(), fleet.FnCurrentLoad, m.Data)
		if err != nil {
			return
		}
		b, _ := json.Marshal(res)
		_ = m.Respond(b)
	})
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return nc, nil
}

// Close disconnects every responder.
func (b *Baseline) Close() {
	for _, nc := range b.conns {
		if nc != nil {
			nc.Close()
		}
	}
	_ = os.RemoveAll(b.dir)
}
