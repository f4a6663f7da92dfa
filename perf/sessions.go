package perf

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/swarm"
)

// The sessions benchmark: N simulated sessions of one public app over the
// control service's WebSocket listener, the first City of them from
// addresses its --sites file places in New Brunswick, New Jersey, the
// rest in another city. It measures admission (sessions ONLINE per
// second), a latencyCheck call on the city's sessions against the same
// call to plain WebSocket responders on a plain nats-server, and the
// control service process's memory per session.
const (
	// sessionApp is the benchmark's app.
	sessionApp = "perf-sessions"
	// cityNetBase and restNet hold the sessions' source addresses: the
	// city's in the smallest network at cityNetBase that fits them, the
	// others in restNet (4 million addresses, apart from it).
	cityNetBase = "127.64.0.0"
	restNet     = "127.128.0.0/10"
	// latencyArgs are the call's arguments (the simulated sessions fetch
	// nothing).
	latencyArgs = `{"url":"https://example.com/","count":3}`
)

// The city the benchmark calls, and where the others are.
var (
	benchCity = fleet.Location{Site: "nb", City: "New Brunswick", Region: "New Jersey", Country: "United States", CountryCode: "US"}
	elsewhere = fleet.Location{Site: "chi", City: "Chicago", Region: "Illinois", Country: "United States", CountryCode: "US"}
)

// sdkSessionCalls, when set (built with the workbench's session calls),
// times the call through bench.Client.Stream as well.
var sdkSessionCalls func(ctx context.Context, c *bench.Client, city, reps int) (Durations, error)

// cityNet is the smallest network at cityNetBase with city usable
// addresses (sessions bind its addresses 1 … city).
func cityNet(city int) string {
	bits := 2
	for (1<<bits)-2 < city {
		bits++
	}
	return fmt.Sprintf("%s/%d", cityNetBase, 32-bits)
}

// sessionRows runs the sessions benchmark.
func sessionRows(ctx context.Context, cfg Config) ([]Row, error) {
	n, city, reps := cfg.Sessions, cfg.City, cfg.SessionReps
	if city <= 0 || city > n {
		return nil, fmt.Errorf("sessions: the city's sessions (%d) must be from 1 to the sessions (%d)", city, n)
	}
	if city > 1<<21 || n-city > 1<<21 {
		return nil, fmt.Errorf("sessions: at most 2,097,152 sessions in the city and as many elsewhere")
	}
	dir, err := os.MkdirTemp("", "cc-perf-sessions-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sites := filepath.Join(dir, "sites.json")
	if err := writeSites(sites, city); err != nil {
		return nil, err
	}

	fmt.Fprintf(cfg.Progress, "sessions: starting the control service (its own process) with a WebSocket listener…\n")
	cp, err := startControlProc(ctx, cfg, filepath.Join(dir, "data"), sites)
	if err != nil {
		return nil, err
	}
	defer cp.stop()
	var notes []string
	if !cp.sites {
		notes = append(notes, "cc-control has no --sites here: the city's sessions are called by their ids, not selected by location")
	}
	if err := cp.c.Control(ctx, fleet.OpAppsAdd, fleet.AppRequest{Name: sessionApp, Functions: []string{swarm.FnLatencyCheck}, Public: true, MaxSessions: n + 100}, nil); err != nil {
		return nil, fmt.Errorf("register app %s: %w (does this control service admit sessions? issue #13)", sessionApp, err)
	}
	before, err := settledRSS(cp.cmd.Process.Pid)
	if err != nil {
		return nil, err
	}

	fmt.Fprintf(cfg.Progress, "sessions: %d connecting (%d in %s)…\n", n, city, benchCity.City)
	children, cityIDs := sessionChildren(cp.wsURL, dir, n, city, false)
	start := time.Now()
	procs, connect, err := spawnChildren(ctx, cfg.SwarmBinary, children, os.Stderr)
	if err != nil {
		return nil, err
	}
	defer procs.stop()
	online, presence, err := waitSessionsOnline(ctx, cp.c, n, start, 5*time.Minute)
	if err != nil {
		return nil, err
	}
	if !presence {
		notes = append(notes, "the control service answers no session snapshot here: admission is timed until every session's connection was accepted")
	}
	rate := float64(n) / online.Seconds()
	after, err := settledRSS(cp.cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	perSession := float64(after-before) / float64(n)

	ids, selected, err := citySessions(ctx, cp.c, cityIDs, city, presence && cp.sites)
	if err != nil {
		return nil, err
	}
	if !selected && cp.sites && presence {
		notes = append(notes, "the snapshot did not select the city; its sessions were called by their ids")
	}
	fmt.Fprintf(cfg.Progress, "sessions: %d calls on the %d sessions of %s…\n", reps, city, benchCity.City)
	d, err := sessionCalls(ctx, cp.c, ids, reps)
	if err != nil {
		return nil, err
	}
	var sdk Durations
	if sdkSessionCalls != nil && selected {
		fmt.Fprintf(cfg.Progress, "sessions: %d calls through the workbench SDK…\n", reps)
		if sdk, err = sdkSessionCalls(ctx, cp.c, city, reps); err != nil {
			return nil, err
		}
	}
	procs.stop()
	cp.stop()

	fmt.Fprintf(cfg.Progress, "sessions: baseline, %d plain WebSocket responders on a plain nats-server…\n", city)
	raw, rawErr := rawSessionCalls(ctx, cfg, dir, city, reps)

	rows := []Row{{
		What:  fmt.Sprintf("session admissions over WebSocket through the callout (%d sessions connecting)", n),
		Value: fmt.Sprintf("%.0f /s", rate),
		Note: fmt.Sprintf("from spawning the simulators to all %d ONLINE: %s (slowest simulator connected its share in %s; simulators share the 2 CPUs)",
			n, online.Round(time.Millisecond), connect.Round(time.Millisecond)),
	}}
	call := Row{
		What:  fmt.Sprintf("latencyCheck on the %d sessions of one city, all replies in (p50 / p99 over %d)", city, reps),
		Value: ms(d.Quantile(0.5)) + " / " + ms(d.Quantile(0.99)),
		Note:  fmt.Sprintf("%d of %d sessions elsewhere not called", n-city, n),
	}
	if rawErr != nil {
		call.Note += "; baseline failed: " + rawErr.Error()
	} else {
		call.Baseline = ms(raw.Quantile(0.5)) + " / " + ms(raw.Quantile(0.99))
		call.Ratio = ratio(d.Quantile(0.5), raw.Quantile(0.5))
	}
	rows = append(rows, call)
	if sdk != nil {
		r := Row{
			What:  fmt.Sprintf("  the same through the workbench SDK: city selected by the control service, then called (p50 / p99 over %d)", reps),
			Value: ms(sdk.Quantile(0.5)) + " / " + ms(sdk.Quantile(0.99)),
		}
		if rawErr == nil {
			r.Baseline = call.Baseline
			r.Ratio = ratio(sdk.Quantile(0.5), raw.Quantile(0.5))
		}
		rows = append(rows, r)
	}
	rows = append(rows, Row{
		What:  "control service (embedded broker) memory per session",
		Value: fmt.Sprintf("%.1f KiB", perSession),
		Note:  fmt.Sprintf("VmRSS %.1f MiB before the %d sessions, %.1f MiB with them", float64(before)/1024, n, float64(after)/1024),
	})
	if len(notes) > 0 {
		rows[0].Note += "; " + strings.Join(notes, "; ")
	}
	return rows, nil
}

// writeSites writes the control service's --sites file: the city's
// network in benchCity, restNet elsewhere.
func writeSites(path string, city int) error {
	type entry struct {
		CIDR        string `json:"cidr"`
		Site        string `json:"site"`
		City        string `json:"city"`
		Region      string `json:"region"`
		Country     string `json:"country"`
		CountryCode string `json:"country_code"`
	}
	e := func(cidr string, l fleet.Location) entry {
		return entry{cidr, l.Site, l.City, l.Region, l.Country, l.CountryCode}
	}
	b, err := json.MarshalIndent([]entry{e(cityNet(city), benchCity), e(restNet, elsewhere)}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// sessionChildren splits n sessions (the first city of them in the
// city's network) over cc-swarm children of at most perChild each. The
// city's children write their sessions' ids to the files returned.
func sessionChildren(wsURL, dir string, n, city int, baseline bool) (children [][]string, idFiles []string) {
	add := func(net string, count int) {
		for first := 0; first < count; first += perChild {
			args := []string{"--server", wsURL, "--sessions", strconv.Itoa(min(perChild, count-first)),
				"--session-net", net, "--session-first", strconv.Itoa(first), "--concurrency", "256"}
			if baseline {
				args = append(args, "--sessions-baseline")
			} else {
				args = append(args, "--app", sessionApp)
				if net != restNet {
					f := filepath.Join(dir, fmt.Sprintf("ids-%d.txt", len(children)))
					args = append(args, "--ids", f)
					idFiles = append(idFiles, f)
				}
			}
			children = append(children, args)
		}
	}
	add(cityNet(city), city)
	if n > city {
		add(restNet, n-city)
	}
	return children, idFiles
}

// controlProc is cc-control in a process of its own, so its memory is
// the broker's and the service's alone.
type controlProc struct {
	cmd    *exec.Cmd
	url    string // the client port, nats://
	wsURL  string
	key    string // the admin's seed file
	c      *bench.Client
	sites  bool // it was given the --sites file
	stderr *bytes.Buffer
	once   sync.Once
	stopFn func()
}

// startControlProc starts cfg.ControlBinary on data with a client port
// and, for sessions (sites set), a WebSocket listener and the sites
// file; extra are more flags. The harness is its admin.
func startControlProc(ctx context.Context, cfg Config, data, sites string, extra ...string) (*controlProc, error) {
	listen, err := freePort()
	if err != nil {
		return nil, err
	}
	cp := &controlProc{url: "nats://" + listen, stderr: &bytes.Buffer{}}
	// The harness is the only operator: no snapshot or control rate
	// limits its polling.
	args := append([]string{"--data", data, "--listen", listen, "--snapshot-rate", "0", "--control-rate", "0"}, extra...)
	if sites != "" {
		ws, err := freePort()
		if err != nil {
			return nil, err
		}
		cp.wsURL = "ws://" + ws
		args = append(args, "--websocket-listen", ws)
		if help, _ := exec.CommandContext(ctx, cfg.ControlBinary, "--help").CombinedOutput(); bytes.Contains(help, []byte("\n  -sites ")) {
			args = append(args, "--sites", sites)
			cp.sites = true
		} else {
			fmt.Fprintf(cfg.Progress, "sessions: %s has no --sites flag: sessions get no location; the city's sessions are called by id\n", cfg.ControlBinary)
		}
	}
	cp.cmd = exec.Command(cfg.ControlBinary, args...)
	var errOut io.Writer = &limitedBuffer{b: cp.stderr, max: 64 << 10}
	if cfg.Verbose {
		errOut = io.MultiWriter(errOut, cfg.Progress)
	}
	cp.cmd.Stdout, cp.cmd.Stderr = io.Discard, errOut
	if err := cp.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.ControlBinary, err)
	}
	exited := make(chan struct{})
	go func() { _ = cp.cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(time.Minute)
	key := filepath.Join(data, controlsvc.AdminKeyFile)
	cp.key = key
	for {
		select {
		case <-exited:
			return nil, fmt.Errorf("%s exited at start: %s", cfg.ControlBinary, strings.TrimSpace(cp.stderr.String()))
		default:
		}
		if _, err := os.Stat(key); err == nil {
			if cp.c == nil {
				cp.c, _ = bench.Connect("nats://"+listen, bench.WithSeedFile(key), bench.WithName("cc-perf (operator)"))
			}
			// Connected: the control API serves once it answers.
			if cp.c != nil {
				wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := cp.c.WhoAmI(wctx)
				cancel()
				if err == nil {
					break
				}
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			cp.stopWith(exited)
			return nil, fmt.Errorf("%s did not accept the admin within a minute: %s", cfg.ControlBinary, strings.TrimSpace(cp.stderr.String()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	cp.stopFn = func() { cp.stopWith(exited) }
	return cp, nil
}

// stop ends cc-control (SIGTERM, then SIGKILL after 20 s) and waits.
func (cp *controlProc) stop() {
	if cp.stopFn != nil {
		cp.stopFn()
	}
}

func (cp *controlProc) stopWith(exited chan struct{}) {
	cp.once.Do(func() {
		if cp.c != nil {
			cp.c.Close()
		}
		_ = cp.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cp.cmd.Process.Kill()
			<-exited
		}
	})
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// settledRSS is pid's VmRSS (KiB) once it has not grown for a second
// (at most 10 s): what it holds, not what it is still allocating.
func settledRSS(pid int) (int64, error) {
	last, err := rssKB(pid)
	if err != nil {
		return 0, err
	}
	for range 10 {
		time.Sleep(time.Second)
		cur, err := rssKB(pid)
		if err != nil {
			return 0, err
		}
		if cur <= last {
			return cur, nil
		}
		last = cur
	}
	return last, nil
}

// errNoSessionPresence: the control service answers no session snapshot.
var errNoSessionPresence = errors.New("no session snapshot")

// sessionSnapshot asks the control service for the sessions q selects,
// gathering the parts of a large answer.
func sessionSnapshot(ctx context.Context, c *bench.Client, q fleet.SessionQuery) (*fleet.SessionSnapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	body, err := json.Marshal(q)
	if err != nil {
		return nil, err
	}
	nc := c.Conn()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)
	m := nats.NewMsg(fleet.CtlSubject(c.Key(), fleet.OpSessionsSnapshot))
	m.Reply, m.Data = inbox, body
	if err := nc.PublishMsg(m); err != nil {
		return nil, err
	}
	var snap *fleet.SessionSnapshot
	for got := 0; snap == nil || got < snap.Parts; got++ {
		msg, err := sub.NextMsgWithContext(ctx)
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, errNoSessionPresence
		}
		if err != nil {
			return nil, fmt.Errorf("session snapshot: %w", err)
		}
		if fleet.IsNoResponders(msg.Header.Get(fleet.HeaderStatus), len(msg.Data)) {
			return nil, errNoSessionPresence
		}
		if code := msg.Header.Get(fleet.HeaderErrorCode); code != "" {
			return nil, fmt.Errorf("session snapshot: %s %s", code, msg.Header.Get(fleet.HeaderError))
		}
		var part fleet.SessionSnapshot
		if err := json.Unmarshal(msg.Data, &part); err != nil {
			return nil, fmt.Errorf("session snapshot: %w", err)
		}
		if snap == nil {
			snap = &part
			continue
		}
		snap.Sessions = append(snap.Sessions, part.Sessions...)
	}
	return snap, nil
}

// waitSessionsOnline polls the session snapshot until n sessions of the
// app are ONLINE and returns the time since start. A service without
// session presence (no snapshot) is timed until now, when every
// simulator has said its sessions are connected (presence false).
func waitSessionsOnline(ctx context.Context, c *bench.Client, n int, start time.Time, limit time.Duration) (time.Duration, bool, error) {
	deadline := time.Now().Add(limit)
	q := fleet.SessionQuery{Where: map[string]string{"app": sessionApp}, Limit: 1}
	for {
		snap, err := sessionSnapshot(ctx, c, q)
		if errors.Is(err, errNoSessionPresence) {
			return time.Since(start), false, nil
		}
		if err != nil {
			return 0, true, err
		}
		if snap.Total >= n {
			return time.Since(start), true, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, true, fmt.Errorf("sessions: %d of %d ONLINE after %s", snap.Total, n, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// citySessions are the ids of the city's sessions: selected by the
// control service by location when it can (selected true), else read
// from the simulators' id files.
func citySessions(ctx context.Context, c *bench.Client, idFiles []string, city int, bySnapshot bool) ([]string, bool, error) {
	if bySnapshot {
		snap, err := sessionSnapshot(ctx, c, fleet.SessionQuery{Where: map[string]string{"app": sessionApp, "city": benchCity.City, "region": benchCity.Region}})
		if err != nil {
			return nil, false, err
		}
		if len(snap.Sessions) != city {
			return nil, false, fmt.Errorf("sessions: the snapshot selects %d sessions in %s, %s; %d are there", len(snap.Sessions), benchCity.City, benchCity.Region, city)
		}
		ids := make([]string, len(snap.Sessions))
		for i, s := range snap.Sessions {
			ids[i] = s.ID
		}
		return ids, true, nil
	}
	var ids []string
	for _, f := range idFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, false, err
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if fields := strings.Fields(sc.Text()); len(fields) >= 2 {
				ids = append(ids, fields[1])
			}
		}
	}
	if len(ids) != city {
		return nil, false, fmt.Errorf("sessions: the simulators wrote %d ids for the city's %d sessions", len(ids), city)
	}
	return ids, false, nil
}

// sessionCalls times reps calls of latencyCheck on the sessions ids, the
// way the workbench calls sessions: one request per session on its call
// subject, replies on the caller's reply subjects of one call token, all
// of them in (after one untimed call).
func sessionCalls(ctx context.Context, c *bench.Client, ids []string, reps int) (Durations, error) {
	var d Durations
	tag := randomTag()
	for i := -1; i < reps; i++ {
		call := fmt.Sprintf("%s%d", tag, i+1)
		took, err := sessionCall(ctx, c, ids, call)
		if err != nil {
			return nil, fmt.Errorf("session call %d: %w", i+1, err)
		}
		if i >= 0 {
			d = append(d, took)
		}
	}
	return d, nil
}

func sessionCall(ctx context.Context, c *bench.Client, ids []string, call string) (time.Duration, error) {
	nc, caller := c.Conn(), c.Key()
	args := []byte(latencyArgs)
	digest := fleet.ArgsDigest(args)
	var ok, bad atomic.Int64
	var firstBad atomic.Value
	done := make(chan struct{})
	n := int64(len(ids))
	sub, err := nc.Subscribe(fleet.CallReplies(caller, call), func(m *nats.Msg) {
		if m.Header.Get(fleet.HeaderError) != "" || m.Header.Get(fleet.HeaderCallID) != call || m.Header.Get(fleet.HeaderArgs) != digest || len(m.Data) == 0 {
			if bad.Add(1) == 1 {
				firstBad.Store(fmt.Sprintf("%s: %v %q", m.Subject, m.Header, m.Data))
			}
		} else {
			ok.Add(1)
		}
		if ok.Load()+bad.Load() == n {
			close(done)
		}
	})
	if err != nil {
		return 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)
	if err := nc.Flush(); err != nil {
		return 0, err
	}
	start := time.Now()
	for _, id := range ids {
		m := nats.NewMsg(fleet.SessionFnSubject(id, swarm.FnLatencyCheck, caller))
		m.Reply = fleet.CallReply(caller, id, call, 0)
		m.Header.Set(fleet.HeaderCallID, call)
		m.Data = args
		if err := nc.PublishMsg(m); err != nil {
			return 0, err
		}
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		return 0, fmt.Errorf("%d of %d replies in 60 s", ok.Load()+bad.Load(), n)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	took := time.Since(start)
	if bad.Load() > 0 {
		return 0, fmt.Errorf("%d of %d answers were not results of this call, e.g. %v", bad.Load(), n, firstBad.Load())
	}
	return took, nil
}

func randomTag() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "perf" + hex.EncodeToString(b) + "x"
}

// rawSessionCalls is the baseline: a plain nats-server with a WebSocket
// listener and no auth, city plain responders in cc-swarm
// --sessions-baseline children (from the same source addresses), and a
// requester sending one request per responder and counting the replies.
func rawSessionCalls(ctx context.Context, cfg Config, dir string, city, reps int) (Durations, error) {
	ws, err := freePort()
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(ws)
	p, _ := strconv.Atoi(port)
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		// As cc-broker: a client still connecting under load takes the
		// short first ping for a protocol error ("expected 'PONG', got
		// 'PING'"); it changes nothing after the connection is up.
		DisableShortFirstPing: true,
		Websocket:             server.WebsocketOpts{Host: host, Port: p, NoTLS: true}})
	if err != nil {
		return nil, err
	}
	go srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		return nil, fmt.Errorf("baseline server not ready")
	}
	children, _ := sessionChildren("ws://"+ws, dir, city, city, true)
	procs, _, err := spawnChildren(ctx, cfg.SwarmBinary, children, os.Stderr)
	if err != nil {
		return nil, err
	}
	defer procs.stop()
	req, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return nil, err
	}
	defer req.Close()
	args := []byte(latencyArgs)
	var d Durations
	for i := -1; i < reps; i++ {
		inbox := nats.NewInbox()
		var got atomic.Int64
		done := make(chan struct{})
		sub, err := req.Subscribe(inbox+".*", func(*nats.Msg) {
			if got.Add(1) == int64(city) {
				close(done)
			}
		})
		if err != nil {
			return nil, err
		}
		_ = sub.SetPendingLimits(-1, -1)
		if err := req.Flush(); err != nil {
			return nil, err
		}
		start := time.Now()
		for j := range city {
			if err := req.PublishRequest(swarm.BaselineSessionSubject(j), inbox+"."+strconv.Itoa(j), args); err != nil {
				return nil, err
			}
		}
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = sub.Unsubscribe()
			return nil, fmt.Errorf("baseline session call: %d of %d replies in 60 s", got.Load(), city)
		}
		if i >= 0 {
			d = append(d, time.Since(start))
		}
		_ = sub.Unsubscribe()
	}
	return d, nil
}
