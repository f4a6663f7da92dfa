package controlsvc

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/nats-io/nats.go"
)

// TestRefusalLoggedOnce: a connection the callout refuses is one line at
// info and above (the callout's "connection refused", naming who and
// why); the broker's two lines about it are at debug.
func TestRefusalLoggedOnce(t *testing.T) {
	out := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, bk := brokertest.Start(t, brokertest.WithAuthTimeout(2*time.Second), brokertest.WithConfig(func(c *broker.Config) {
		c.Logger = log.With("component", "broker")
	}))
	c, _ := brokerCallout(t, bk)
	c.log = log.With("component", "callout")
	ctl := brokertest.Connect(t, b, bk.Control)
	_, stop, err := c.subscribe(ctl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	if err := ctl.Flush(); err != nil {
		t.Fatal(err)
	}
	rogue, pub := newUser(t)
	start := len(out.String())
	if _, err := nats.Connect(b.ClientURL(), nats.Nkey(pub, rogue.Sign), nats.Name("10.0.0.9_rogue"), nats.NoReconnect()); err == nil {
		t.Fatal("an unknown machine was let in")
	}
	// The broker's last line about it comes after the client is told.
	waitLog(t, out, "Auth callout service returned an error")
	var above, debug []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()[start:]), "\n") {
		switch {
		case !strings.Contains(l, "rogue") && !strings.Contains(l, pub):
		case strings.Contains(l, "level=DEBUG"):
			debug = append(debug, l)
		default:
			above = append(above, l)
		}
	}
	if len(above) != 1 || !strings.Contains(above[0], `level=WARN msg="connection refused" component=callout kind=agent name=10.0.0.9_rogue ip=127.0.0.1 reason="machine 10.0.0.9_rogue is not in the registry`) {
		t.Errorf("want one line at info or above about the refusal, got:\n%s", strings.Join(above, "\n"))
	}
	if len(debug) != 2 {
		t.Errorf("%d debug lines about the refusal, want the broker's 2:\n%s", len(debug), strings.Join(debug, "\n"))
	}
}

// waitLog waits until out holds want.
func waitLog(t *testing.T, out *syncBuffer, want string) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(out.String(), want) {
		select {
		case <-deadline.C:
			t.Fatalf("no %q in the log:\n%s", want, out.String())
		case <-tick.C:
		}
	}
}

// TestRefusalLogBounded: a flood of refused connections (unknown keys
// need no registry entry) is at most refusalLogBurst warn lines a window;
// the rest are at debug, and counted in one warn line when a refusal
// comes after the window.
func TestRefusalLogBounded(t *testing.T) {
	out := &syncBuffer{}
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &callout{log: slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug})), now: func() time.Time { return at }}
	for range refusalLogBurst + 5 {
		_ = c.refuse("agent", "10.0.0.9_rogue", "UABC", "192.0.2.7", "not in the registry")
	}
	got := out.String()
	if n, d := strings.Count(got, `level=WARN msg="connection refused"`), strings.Count(got, `level=DEBUG msg="connection refused"`); n != refusalLogBurst || d != 5 {
		t.Fatalf("%d refusals at warn and %d at debug, want %d and 5", n, d, refusalLogBurst)
	}
	at = at.Add(refusalLogWindow)
	_ = c.refuse("agent", "10.0.0.9_rogue", "UABC", "192.0.2.7", "not in the registry")
	rest := strings.TrimPrefix(out.String(), got)
	if !strings.Contains(rest, `level=WARN msg="more connections refused (logged at debug)" count=5`) || strings.Count(rest, `level=WARN msg="connection refused"`) != 1 {
		t.Errorf("after the window, got:\n%s", rest)
	}
}
