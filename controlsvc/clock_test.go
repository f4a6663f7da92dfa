package controlsvc

import (
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/broker"
)

// TestConfigNowIsTheServiceClock: Config.Now reaches every part of the
// service that decides by time (the callout gets it in startServing, see
// TestExpiredRequestSkipped for its use): the registry stamps what it
// records with it and presence ages tombstones by it.
func TestConfigNowIsTheServiceClock(t *testing.T) {
	at := time.Date(2043, 5, 6, 7, 8, 9, 0, time.UTC)
	s, err := New(Config{DataDir: t.TempDir(), Broker: broker.Config{Listen: "127.0.0.1:0"}, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ops := s.reg.Operators()
	if len(ops) != 1 || !ops[0].AddedAt.Equal(at) {
		t.Fatalf("got operators %+v, want the admin added at %v", ops, at)
	}
	if got := s.presence.state.now(); !got.Equal(at) {
		t.Errorf("presence clock: got %v, want %v", got, at)
	}
	if got := s.presence.clock(); !got.Equal(at) {
		t.Errorf("presence tracker clock: got %v, want %v", got, at)
	}
	if got := s.cfg.Now(); !got.Equal(at) {
		t.Errorf("service clock: got %v, want %v", got, at)
	}
}
