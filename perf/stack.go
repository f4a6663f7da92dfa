package perf

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/swarm"
)

// stack is a control service (embedded broker unless brokerURL is set),
// an admin workbench client and a swarm of n agents, all ONLINE.
type stack struct {
	svc     *controlsvc.Service // in-process; nil when cp runs it
	cp      *controlProc        // cc-control in a process of its own
	url     string              // the client port
	key     string              // the admin's seed file
	c       *bench.Client
	procs   *swarmProcs
	first   string // machine id of the first member
	dir     string
	connect time.Duration // swarm start until every member connected
	online  time.Duration // swarm start until every member ONLINE
	// admitCPU is cc-control's CPU time over the admission run (process
	// stacks only); pprof its profiler's CPU profile URL, if served.
	admitCPU time.Duration
	pprof    string
}

func startStack(ctx context.Context, cfg Config, n int, dataDir, brokerURL string) (*stack, error) {
	log := cfg.Logger
	st := &stack{dir: dataDir}
	if st.dir == "" {
		d, err := os.MkdirTemp("", "cc-perf-")
		if err != nil {
			return nil, err
		}
		st.dir = d
	}
	svc, err := controlsvc.New(controlsvc.Config{DataDir: st.dir, BrokerURL: brokerURL,
		// An external broker may have no JetStream; the audit is not what
		// is measured.
		Audit:  controlsvc.AuditConfig{NotDurable: brokerURL != ""},
		Broker: broker.Config{Listen: "127.0.0.1:0"}, Logger: log})
	if err != nil {
		return nil, err
	}
	if err := svc.Start(ctx); err != nil {
		return nil, err
	}
	st.svc, st.url, st.key = svc, svc.ClientURL(), svc.AdminKeyPath()
	if st.c, err = bench.Connect(svc.ClientURL(), bench.WithSeedFile(svc.AdminKeyPath())); err != nil {
		st.close()
		return nil, err
	}
	if n > 0 {
		if err := st.addSwarm(ctx, cfg.SwarmBinary, n); err != nil {
			st.close()
			return nil, err
		}
	}
	return st, nil
}

func (st *stack) addSwarm(ctx context.Context, bin string, n int) error {
	start := time.Now()
	procs, connect, err := spawnSwarm(ctx, bin, st.svc.ClientURL(), st.svc.AdminKeyPath(), n, "perf", false)
	if err != nil {
		return err
	}
	st.procs, st.connect = procs, connect
	if err := waitOnline(ctx, st.svc, n, 5*time.Minute); err != nil {
		return err
	}
	st.online = time.Since(start)
	st.first = swarm.MachineID("perf0-", 0)
	return nil
}

// waitOnline polls the control service until n machines are ONLINE.
func waitOnline(ctx context.Context, svc *controlsvc.Service, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		got := svc.OnlineCount()
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d of %d machines ONLINE after %s", got, n, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (st *stack) close() {
	if st.procs != nil {
		st.procs.stop()
	}
	if st.c != nil {
		st.c.Close()
	}
	if st.svc != nil {
		st.svc.Close()
	}
	if st.cp != nil {
		st.cp.stop()
		st.c = nil // closed by cp.stop
	}
	_ = os.RemoveAll(st.dir)
}
