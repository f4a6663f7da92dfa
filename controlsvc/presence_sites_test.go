package controlsvc

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// countingHandler counts the log records it is given, and keeps them.
type countingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r)
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func (h *countingHandler) take() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.records
	h.records = nil
	return out
}

// TestSiteWarnRateLimited: what a site causes is logged once per
// siteWarnEvery per site and kind, the next line saying how many were
// held back.
func TestSiteWarnRateLimited(t *testing.T) {
	h := &countingHandler{}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tr := &presenceTracker{log: slog.New(h), now: func() time.Time { return now }}
	for range 100 {
		tr.siteWarn("dc2", "claims", "claimed")
	}
	tr.siteWarn("dc3", "claims", "claimed")
	tr.siteWarn("dc2", "events", "dropped")
	if got := h.take(); len(got) != 3 {
		t.Fatalf("%d lines for 100 claims of dc2 and one of dc3 and one drop of dc2, want 3", len(got))
	}
	now = now.Add(siteWarnEvery)
	tr.siteWarn("dc2", "claims", "claimed")
	got := h.take()
	if len(got) != 1 {
		t.Fatalf("%d lines after siteWarnEvery, want 1", len(got))
	}
	held := ""
	got[0].Attrs(func(a slog.Attr) bool {
		if a.Key == "like_lines_held_back" {
			held = a.Value.String()
		}
		return true
	})
	if held != "99" {
		t.Fatalf("like_lines_held_back %q, want 99", held)
	}
}

// TestSiteJobsBounded: a site's jobs wait in a bounded queue, run one at
// a time; past the bound they are dropped.
func TestSiteJobsBounded(t *testing.T) {
	tr := &presenceTracker{log: slog.New(slog.DiscardHandler)}
	release := make(chan struct{})
	var running, ran atomic.Int64
	accepted := 0
	for range siteJobQueue * 3 {
		if tr.siteJob("dc2", "test", func() {
			if running.Add(1) > 1 {
				t.Error("two jobs of one site at once")
			}
			<-release
			running.Add(-1)
			ran.Add(1)
		}) {
			accepted++
		}
	}
	if accepted < siteJobQueue || accepted > siteJobQueue+1 {
		t.Fatalf("accepted %d jobs, want %d (+1 already running)", accepted, siteJobQueue)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for ran.Load() != int64(accepted) {
		if time.Now().After(deadline) {
			t.Fatalf("ran %d of %d jobs", ran.Load(), accepted)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// plainConn starts a plain NATS server and returns two connections to
// it: one for the service, one to answer as brokers would.
func plainConn(t *testing.T) (svc, peer *nats.Conn) {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, NoSystemAccount: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("test server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	for _, c := range []**nats.Conn{&svc, &peer} {
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		*c = nc
	}
	return svc, peer
}

// TestPingAtBounded: answers that keep coming do not extend a ping past
// its hard deadline, and more distinct servers than allowed is an error.
func TestPingAtBounded(t *testing.T) {
	sys, peer := plainConn(t)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	// "$SYS.REQ.SERVER.PING" answered by one server, every 50 ms, for good.
	if _, err := peer.Subscribe(serverPingSubject, func(m *nats.Msg) {
		go func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				_ = peer.Publish(m.Reply, []byte(`{"server":{"id":"NSAME"}}`))
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
	}); err != nil {
		t.Fatal(err)
	}
	// "many.PING" answered by 40 distinct servers at once.
	if _, err := peer.Subscribe("many.PING", func(m *nats.Msg) {
		for i := range 40 {
			_ = peer.Publish(m.Reply, []byte(`{"server":{"id":"N`+strconv.Itoa(i)+`"}}`))
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := peer.Flush(); err != nil {
		t.Fatal(err)
	}
	tr := &presenceTracker{log: slog.New(slog.DiscardHandler), sys: sys}

	type result struct {
		ids []string
		err error
	}
	done := make(chan result, 1)
	go func() {
		ids, err := tr.pingAt(context.Background(), serverPingSubject, maxSiteServers)
		done <- result{ids, err}
	}()
	select {
	case r := <-done:
		if r.err != nil || strings.Join(r.ids, ",") != "NSAME" {
			t.Fatalf("ping answered for good by one server: %v, %v; want [NSAME]", r.ids, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a ping whose answers keep coming never ended")
	}

	ids, err := tr.pingAt(context.Background(), "many.PING", maxSiteServers)
	if err == nil || len(ids) != maxSiteServers {
		t.Fatalf("40 servers answering: %d ids, error %v; want %d and an error", len(ids), err, maxSiteServers)
	}
}

// TestServerConnzBudget: a broker listing full pages for good is asked
// for one page past the budget, and refused.
func TestServerConnzBudget(t *testing.T) {
	sys, peer := plainConn(t)
	var pages atomic.Int64
	if _, err := peer.Subscribe("$SYS.REQ.SERVER.NA.CONNZ", func(m *nats.Msg) {
		pages.Add(1)
		var b strings.Builder
		b.WriteString(`{"data":{"connections":[`)
		for i := range 5000 {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"cid":` + strconv.Itoa(int(pages.Load())*5000+i) + `,"authorized_user":"x"}`)
		}
		b.WriteString(`]}}`)
		_ = m.Respond([]byte(b.String()))
	}); err != nil {
		t.Fatal(err)
	}
	if err := peer.Flush(); err != nil {
		t.Fatal(err)
	}
	tr := &presenceTracker{log: slog.New(slog.DiscardHandler), sys: sys, reg: registryWith(t, nil, nil)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, b := range []int{10, 12000} {
		pages.Store(0)
		budget := b
		if _, err := tr.serverConnz(ctx, "NA", &budget); !errors.Is(err, errTooManyConns) {
			t.Fatalf("budget %d: %v, want %v", b, err, errTooManyConns)
		}
		if want := int64(b/5000 + 1); pages.Load() != want {
			t.Fatalf("budget %d: %d pages asked, want %d", b, pages.Load(), want)
		}
	}
}

// TestSiteForgedConnectsOfOwnMachineBounded: a site forging connect
// events for one of its own machines with ever new connection ids adds
// one connection to presence (the newest), not one per event; its
// forged disconnects of made-up connections keep a bounded number of
// tombstones.
func TestSiteForgedConnectsOfOwnMachineBounded(t *testing.T) {
	rec := &recorder{}
	sys, _ := plainConn(t)
	reg := registryWith(t, nil, nil)
	_, pub := newUser(t)
	if _, err := reg.SetMachineAt("web01", pub, "dc2", nil, "test", false); err != nil {
		t.Fatal(err)
	}
	tr := &presenceTracker{log: slog.New(slog.DiscardHandler), sys: sys, reg: reg}
	tr.state = newPresence(func(string) map[string]string { return nil }, rec.emit)
	subject := fleet.SiteSysSubject("dc2", connectSubject)
	for cid := range uint64(2000) {
		tr.handleEvent(eventMsg(t, subject, "NX", cid+1, "agent:web01", ""))
	}
	if n := len(tr.state.connsOf("agent:web01")); n != 1 {
		t.Fatalf("presence holds %d connections of web01 after 2,000 forged connects, want 1", n)
	}
	wantEvents(t, rec, "joined web01")

	subject = fleet.SiteSysSubject("dc2", disconnectSubject)
	for cid := range uint64(maxSiteTombstones + 500) {
		tr.handleEvent(eventMsg(t, subject, "NX", 1_000_000+cid, "agent:web01", "Client Closed"))
	}
	tr.state.mu.Lock()
	n := len(tr.state.tombstones)
	tr.state.mu.Unlock()
	if n > maxSiteTombstones {
		t.Fatalf("%d tombstones after %d forged disconnects, want at most %d", n, maxSiteTombstones+500, maxSiteTombstones)
	}
	if !tr.state.online("web01") {
		t.Fatal("forged disconnects of other connections took web01 offline")
	}
}
