package broker_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/commandcontrol/commandcontrol/broker"
	"github.com/commandcontrol/commandcontrol/broker/brokertest"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestStartLogQuiet: a broker with JetStream logs what started and where
// it listens at info; nats-server's banner (ASCII art, version and
// JetStream boxes) only at debug.
func TestStartLogQuiet(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		out := &stacktest.Buffer{}
		brokertest.Start(t, brokertest.WithConfig(func(c *broker.Config) {
			c.StoreDir = t.TempDir()
			c.Logger = slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
		}))
		got := out.String()
		for _, want := range []string{"Starting nats-server", "Listening for client connections", "Server is ready"} {
			if !strings.Contains(got, want) {
				t.Errorf("%s: no %q in the log:\n%s", level, want, got)
			}
		}
		banner := strings.Contains(got, "docs.nats.io") || strings.Contains(got, "JETSTREAM") || strings.Contains(got, "Version:") || strings.Contains(got, `msg=""`)
		if banner != (level == slog.LevelDebug) {
			t.Errorf("%s: banner logged %v, want %v:\n%s", level, banner, level == slog.LevelDebug, got)
		}
	}
}
