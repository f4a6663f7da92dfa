package perf

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
)

// restartRow starts a stand-alone broker on a fixed port, a control
// service and n agents, restarts the broker and measures the time until
// every agent is ONLINE again.
func restartRow(ctx context.Context, cfg Config, n int) (Row, error) {
	dir, err := os.MkdirTemp("", "cc-perf-restart-")
	if err != nil {
		return Row{}, err
	}
	defer os.RemoveAll(dir)
	keys, err := controlsvc.LoadOrCreateKeys(dir)
	if err != nil {
		return Row{}, err
	}
	auth, err := keys.BrokerAuth()
	if err != nil {
		return Row{}, err
	}
	addr, err := freePort()
	if err != nil {
		return Row{}, err
	}
	bcfg := broker.Config{Listen: addr, Auth: auth}
	b, err := startBroker(bcfg)
	if err != nil {
		return Row{}, err
	}
	st, err := startStack(ctx, cfg, n, dir, b.ClientURL())
	if err != nil {
		b.Shutdown()
		return Row{}, err
	}
	defer st.close()
	b.Shutdown()
	start := time.Now()
	if b, err = startBroker(bcfg); err != nil {
		return Row{}, err
	}
	defer b.Shutdown()
	// Every machine must have left and joined again: ONLINE since the restart.
	if err := waitOnlineSince(ctx, st.svc, n, start, 2*time.Minute); err != nil {
		return Row{}, err
	}
	took := time.Since(start)
	return Row{
		What:  fmt.Sprintf("%d agents ONLINE again after a broker restart", n),
		Value: took.Round(time.Millisecond).String(), Target: "≤ 5 s", Met: yes(took <= 5*time.Second),
	}, nil
}

func startBroker(cfg broker.Config) (*broker.Broker, error) {
	b, err := broker.New(cfg)
	if err != nil {
		return nil, err
	}
	return b, b.Start()
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitOnlineSince polls until n machines are ONLINE, each since t.
func waitOnlineSince(ctx context.Context, svc *controlsvc.Service, n int, t time.Time, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		fresh := 0
		for _, s := range svc.Snapshot().Servers {
			if !s.Since.Before(t) {
				fresh++
			}
		}
		if fresh >= n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d of %d machines back ONLINE after %s", fresh, n, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
