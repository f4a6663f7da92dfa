package perf

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/controlsvc"
)

// The cluster mode (Config.Brokers > 1): every broker, control replica
// and simulator is a process of its own, so no process holds more than
// its share of the sockets (the open-file limit here is 20,000 per
// process, and cannot be raised).

// ccBroker is one cc-broker process of the cluster.
type ccBroker struct {
	name    string
	args    []string
	url     string
	monitor string
	log     string
	cmd     *exec.Cmd
}

// ccCluster is the brokers and control replicas of one cluster run.
type ccCluster struct {
	cfg      Config
	dir      string
	brokers  []*ccBroker
	controls []*exec.Cmd
	adminKey string
}

// urls is the brokers' client URLs, comma-separated, starting at broker
// first (nats.go shuffles them anyway; the order only says where a list
// begins).
func (cl *ccCluster) urls(first int) string {
	var out []string
	for i := range cl.brokers {
		out = append(out, cl.brokers[(first+i)%len(cl.brokers)].url)
	}
	return strings.Join(out, ",")
}

// startCluster starts cfg.Brokers routed cc-broker processes (JetStream,
// each its own --name and --store-dir) and cfg.ControlReplicas cc-control
// processes connected to all of them. Every replica's data directory holds
// the same keys (the callout issuer, its xkey and the service's users:
// the brokers trust one issuer) and the same admin key, copied from the
// first replica's.
func startCluster(ctx context.Context, cfg Config, dir string) (cl *ccCluster, err error) {
	cl = &ccCluster{cfg: cfg, dir: dir}
	defer func() {
		if err != nil {
			cl.close()
		}
	}()
	first := filepath.Join(dir, "control-1")
	if _, err := controlsvc.LoadOrCreateKeys(first); err != nil {
		return nil, err
	}
	secret := make([]byte, 24)
	_, _ = rand.Read(secret)
	secretFile := filepath.Join(dir, "cluster.secret")
	if err := os.WriteFile(secretFile, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		return nil, err
	}
	type ports struct{ client, cluster, monitor string }
	var ps []ports
	for range cfg.Brokers {
		var p ports
		for _, a := range []*string{&p.client, &p.cluster, &p.monitor} {
			if *a, err = freePort(); err != nil {
				return nil, err
			}
		}
		ps = append(ps, p)
	}
	for i, p := range ps {
		var routes []string
		for j, q := range ps {
			if j != i {
				routes = append(routes, "nats-route://"+q.cluster)
			}
		}
		b := &ccBroker{
			name: fmt.Sprintf("b%d", i+1), url: "nats://" + p.client, monitor: "http://" + p.monitor,
			log: filepath.Join(dir, fmt.Sprintf("broker-%d.log", i+1)),
		}
		b.args = []string{"--auth", filepath.Join(first, controlsvc.BrokerAuthFile), "--listen", p.client, "--name", b.name,
			"--store-dir", filepath.Join(dir, "js-"+b.name), "--cluster-listen", p.cluster, "--routes", strings.Join(routes, ","),
			"--cluster-secret-file", secretFile, "--monitor-listen", p.monitor}
		if err := b.start(cfg.BrokerBinary); err != nil {
			return nil, err
		}
		cl.brokers = append(cl.brokers, b)
	}
	for _, b := range cl.brokers {
		if err := b.waitRoutes(ctx, cfg.Brokers-1, time.Minute); err != nil {
			return nil, err
		}
	}
	for i := range cfg.ControlReplicas {
		data := filepath.Join(dir, fmt.Sprintf("control-%d", i+1))
		if i > 0 {
			// The same identity as the first replica: its keys and the
			// admin's seed.
			if err := copyKeys(first, data); err != nil {
				return nil, err
			}
		}
		log := filepath.Join(dir, fmt.Sprintf("control-%d.log", i+1))
		cmd, err := startLogged(cfg.ControlBinary, log, "--data", data, "--broker", cl.urls(i), "--no-durable-audit")
		if err != nil {
			return nil, err
		}
		cl.controls = append(cl.controls, cmd)
		if err := waitLogLine(ctx, log, "control service ready", time.Minute); err != nil {
			return nil, fmt.Errorf("control replica %d: %w", i+1, err)
		}
	}
	cl.adminKey = filepath.Join(first, controlsvc.AdminKeyFile)
	return cl, nil
}

// copyKeys copies the control service's keys and admin seed from data
// directory from to to.
func copyKeys(from, to string) error {
	if err := os.MkdirAll(filepath.Join(to, "keys"), 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(filepath.Join(from, "keys"))
	if err != nil {
		return err
	}
	files := []string{controlsvc.AdminKeyFile}
	for _, e := range entries {
		files = append(files, filepath.Join("keys", e.Name()))
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, f), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// startLogged starts bin with args, its output appended to file log.
func startLogged(bin, log string, args ...string) (*exec.Cmd, error) {
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = cmd.Wait(); f.Close() }()
	return cmd, nil
}

// waitLogLine polls file log until it holds line, or limit passes.
func waitLogLine(ctx context.Context, log, line string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if b, err := os.ReadFile(log); err == nil && strings.Contains(string(b), line) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			b, _ := os.ReadFile(log)
			return fmt.Errorf("no %q in %s after %s; its end:\n%s", line, log, limit, tail(string(b), 2000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (b *ccBroker) start(bin string) error {
	cmd, err := startLogged(bin, b.log, b.args...)
	if err != nil {
		return err
	}
	b.cmd = cmd
	return nil
}

// stop ends the broker (SIGTERM, then SIGKILL after 10 s) and waits.
func (b *ccBroker) stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	waitExit(b.cmd, 10*time.Second)
	b.cmd = nil
}

// waitRoutes polls the broker's monitoring until it has routes to want
// other brokers.
func (b *ccBroker) waitRoutes(ctx context.Context, want int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		var rz struct {
			NumRoutes int `json:"num_routes"`
			Routes    []struct {
				RemoteName string `json:"remote_name"`
			} `json:"routes"`
		}
		if err := getJSON(ctx, b.monitor+"/routez", &rz); err == nil {
			names := map[string]bool{}
			for _, r := range rz.Routes {
				names[r.RemoteName] = true
			}
			if len(names) >= want {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			out, _ := os.ReadFile(b.log)
			return fmt.Errorf("broker %s has no routes to %d others after %s; its log ends:\n%s", b.name, want, limit, tail(string(out), 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// connections is how many client connections the broker holds.
func (b *ccBroker) connections(ctx context.Context) (int, error) {
	var vz struct {
		Connections int `json:"connections"`
	}
	err := getJSON(ctx, b.monitor+"/varz", &vz)
	return vz.Connections, err
}

func getJSON(ctx context.Context, url string, v any) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s: %s", url, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// rssBytes is process pid's resident memory (Linux; 0 elsewhere).
func rssBytes(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func (cl *ccCluster) close() {
	for _, c := range cl.controls {
		if c.Process != nil {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, c := range cl.controls {
		waitExit(c, 10*time.Second)
	}
	cl.controls = nil
	for _, b := range cl.brokers {
		b.stop()
	}
}

// waitExit waits until cmd's process has gone, killing it after limit.
func waitExit(cmd *exec.Cmd, limit time.Duration) {
	if cmd.Process == nil {
		return
	}
	deadline := time.Now().Add(limit)
	for cmd.Process.Signal(syscall.Signal(0)) == nil {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			deadline = time.Now().Add(time.Hour)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// onlineCount asks the control service how many machines are ONLINE.
func onlineCount(ctx context.Context, c *bench.Client) (int, error) {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := c.Snapshot(sctx)
	if err != nil {
		return 0, err
	}
	return len(s.Servers), nil
}

// waitCount polls count every half second until it reaches n, or limit passes;
// it returns how long that took.
func waitCount(ctx context.Context, what string, n int, limit time.Duration, count func() (int, error)) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(limit)
	got, last := 0, error(nil)
	for {
		if got, last = count(); last == nil && got >= n {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, fmt.Errorf("%s: %d of %d after %s (last error: %v)", what, got, n, limit, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
