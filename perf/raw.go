package perf

import (
	"context"
	"encoding/json"
	"os"
	"sync/atomic"

	"fmt"
	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/swarm"
	"net"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// rawFanout is the baseline: the same fan-out with plain nats.go and no
// framework — a plain nats-server, n plain connections each answering one
// subject by running the same current-load handler on the same synthetic
// hosts and replying its JSON, and a requester that publishes once and
// counts n replies on a plain subscription.
func rawFanout(ctx context.Context, n, reps int) (Durations, error) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, err
	}
	go srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		return nil, fmt.Errorf("baseline server not ready")
	}
	url := srv.ClientURL()
	dir, err := os.MkdirTemp("", "cc-perf-raw-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	roots, err := swarm.WriteHosts(dir)
	if err != nil {
		return nil, err
	}
	conns, err := rawResponders(ctx, url, n, roots)
	defer func() {
		for _, nc := range conns {
			if nc != nil {
				nc.Close()
			}
		}
	}()
	if err != nil {
		return nil, err
	}
	req, err := nats.Connect(url)
	if err != nil {
		return nil, err
	}
	defer req.Close()
	var d Durations
	for i := 0; i < reps; i++ {
		inbox := nats.NewInbox()
		var got atomic.Int64
		done := make(chan struct{})
		sub, err := req.Subscribe(inbox, func(*nats.Msg) {
			if got.Add(1) == int64(n) {
				close(done)
			}
		})
		if err != nil {
			return nil, err
		}
		_ = sub.SetPendingLimits(-1, -1)
		start := time.Now()
		if err := req.PublishRequest("raw.all.current-load", inbox, []byte("{}")); err != nil {
			return nil, err
		}
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = sub.Unsubscribe()
			return nil, fmt.Errorf("baseline fan-out: %d of %d replies in 60s", got.Load(), n)
		}
		d = append(d, time.Since(start))
		_ = sub.Unsubscribe()
	}
	return d, nil
}

func rawResponders(ctx context.Context, url string, n int, roots []string) ([]*nats.Conn, error) {
	sets := make([]*functions.Set, len(roots))
	for i, r := range roots {
		sets[i] = functions.New(&functions.Env{Root: r})
	}
	conns := make([]*nats.Conn, n)
	sem := make(chan struct{}, 512)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	srcs := 1 + n/20000
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%srcs))}}
			nc, err := nats.Connect(url, nats.SetCustomDialer(d), nats.ReconnectBufSize(64<<10))
			if err == nil {
				fns := sets[i%len(sets)]
				_, err = nc.Subscribe("raw.all.current-load", func(m *nats.Msg) {
					res, err := fns.Call(context.Background(), "current-load", m.Data)
					if err != nil {
						return
					}
					b, _ := json.Marshal(res)
					_ = m.Respond(b)
				})
			}
			if err == nil {
				err = nc.Flush()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			conns[i] = nc
		})
		if ctx.Err() != nil {
			break
		}
	}
	wg.Wait()
	return conns, firstErr
}
