package perf

import (
	"strings"

	"context"
	"fmt"
	"github.com/nats-io/nats-server/v2/server"
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
	b.Shutdown()
	start := time.Now()
	if b, err = startBroker(bcfg); err != nil {
		st.close()
		return Row{}, err
	}
	// The fleet goes before the broker: nats-server v2.15.2 can crash when
	// clients still authenticate while it shuts down.
	defer func() { st.close(); b.Shutdown() }()
	// Every agent has a connection to the new broker, and presence counts
	// all of them ONLINE.
	if err := waitReconnected(ctx, b, st.svc, n, 2*time.Minute); err != nil {
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

// waitReconnected polls until the broker holds at least n agent
// connections and presence shows n machines ONLINE.
func waitReconnected(ctx context.Context, b *broker.Broker, svc *controlsvc.Service, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		// Presence first, cheaply; the broker's CONNZ (which holds its
		// locks while it lists 10,000 connections, and would slow the
		// very reconnections being measured) only once presence says so.
		if svc.OnlineCount() >= n {
			agents := map[string]bool{}
			if cz, err := b.Server().Connz(&server.ConnzOptions{Account: broker.FleetAccount, Username: true, Limit: n + 100}); err == nil {
				for _, c := range cz.Conns {
					if id, ok := strings.CutPrefix(c.AuthorizedUser, "agent:"); ok {
						agents[id] = true
					}
				}
			}
			if len(agents) >= n {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return lostAgents(b, svc, n, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lostAgents explains a restart that did not complete: how many agents
// have a connection, how many are ONLINE, and some that are one but not
// the other.
func lostAgents(b *broker.Broker, svc *controlsvc.Service, n int, limit time.Duration) error {
	agents := map[string]string{}
	if cz, err := b.Server().Connz(&server.ConnzOptions{Account: broker.FleetAccount, Username: true, Limit: n + 100}); err == nil {
		for _, c := range cz.Conns {
			if id, ok := strings.CutPrefix(c.AuthorizedUser, "agent:"); ok {
				agents[id] += fmt.Sprintf(" cid %d since %s", c.Cid, c.Start.Format("15:04:05.000"))
			}
		}
	}
	snap := svc.Snapshot().Servers
	connected := len(agents)
	var missing []string
	for _, s := range snap {
		delete(agents, s.Machine)
	}
	for id, conns := range agents {
		if missing = append(missing, id+conns); len(missing) == 5 {
			break
		}
	}
	return fmt.Errorf("after %s: %d of %d agents reconnected, %d ONLINE (connected but not ONLINE, up to 5: %v)", limit, connected, n, len(snap), missing)
}
