package controlsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/nats-io/nkeys"
)

// openRegistry attaches the registry's store once the service is
// connected: the KV bucket in the CONTROL account's JetStream (importing
// registry.json on the first start), or, when the broker has no
// JetStream, the registry file as before, with a warning that replicas
// need JetStream. Then the first admin is made, and what Preregister
// registers.
func (s *Service) openRegistry(ctx context.Context) error {
	log := s.log.With("component", "registry")
	store, err := s.attachRegistryKV(ctx, log)
	switch {
	case err == nil:
		s.closers = append(s.closers, store.close)
		if err := s.reg.importFile(ctx, store, log); err != nil {
			return err
		}
	case noJetStream(err) || (s.broker != nil && !s.broker.Server().JetStreamEnabled()):
		if err := s.reg.attachFile(); err != nil {
			return err
		}
		log.Warn("the registry is kept in the file "+s.reg.path+": the broker has no JetStream for the CONTROL account, "+
			"so control-service replicas cannot share it (give cc-broker --store-dir to keep it in JetStream)", "why", err)
	default:
		return fmt.Errorf("open the registry bucket %s: %w", RegistryBucket, err)
	}
	if err := s.ensureAdmin(); err != nil {
		return err
	}
	if s.cfg.Preregister != nil {
		return s.cfg.Preregister(s.reg)
	}
	return nil
}

// How long Start waits for the registry bucket: a JetStream cluster that
// has just started elects its leaders for a while (the JetStream API
// answers "temporarily unavailable" or not at all), and a broker may
// enable the CONTROL account's JetStream a moment after it accepts
// connections (noJetStreamFor: what it takes to conclude it has none).
var (
	registryOpenWait = 2 * time.Minute
	noJetStreamFor   = 3 * time.Second
)

// attachRegistryKV attaches the bucket, trying again while the cluster
// is not ready (saying so), until registryOpenWait or ctx ends. It
// returns a no-JetStream error only when the broker said so throughout
// noJetStreamFor.
func (s *Service) attachRegistryKV(ctx context.Context, log *slog.Logger) (*kvStore, error) {
	// Real time, not cfg.Now: a retry's patience, which a test's fixed
	// clock must not make endless.
	start := time.Now()
	var noJS time.Time
	for attempt := 1; ; attempt++ {
		store, err := s.reg.attachKV(ctx, s.ctl, log)
		if err == nil {
			return store, nil
		}
		now := time.Now()
		switch {
		case noJetStream(err) && noJS.IsZero():
			noJS = now
		case !noJetStream(err):
			noJS = time.Time{}
		}
		if (!noJS.IsZero() && now.Sub(noJS) >= noJetStreamFor) || now.Sub(start) >= registryOpenWait || ctx.Err() != nil {
			return nil, err
		}
		if s.broker != nil && !s.broker.Server().JetStreamEnabled() {
			return nil, err // our own broker has none: nothing to wait for
		}
		log.Warn("the registry bucket is not reachable yet; trying again (a JetStream cluster elects its leaders after a start)",
			"attempt", attempt, "error", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// attachFile makes the registry file the registry's store.
func (r *Registry) attachFile() error {
	d := registryData{}
	if err := readRegistryFile(r.path, &d); err != nil {
		return err
	}
	d.fill()
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.data, r.file, r.kv = d, true, nil
	r.changes.Add(1)
	return nil
}

// ensureAdmin creates <data>/admin.nk and registers it as operator "admin"
// when the registry has no operator yet. On every later start an admin.nk
// that group or others can read is refused too: it is an admin's identity,
// whoever can read it is an admin. When another replica made the first
// admin at the same moment, its admin stands and the key made here is
// removed again.
func (s *Service) ensureAdmin() error {
	if len(s.reg.Operators()) > 0 {
		return checkSeedMode(s.AdminKeyPath())
	}
	_, statErr := os.Stat(s.AdminKeyPath())
	kp, err := LoadOrCreateSeed(s.AdminKeyPath(), nkeys.CreateUser)
	if err != nil {
		return err
	}
	pub, _ := kp.PublicKey()
	if _, err := s.reg.AddOperator("admin", pub, fleet.RoleAdmin); err != nil {
		if errors.Is(err, ErrExists) && len(s.reg.Operators()) > 0 {
			if errors.Is(statErr, os.ErrNotExist) {
				_ = os.Remove(s.AdminKeyPath())
			}
			s.log.Info("another control-service replica created the first admin; this one did not")
			return nil
		}
		return err
	}
	s.adminCreated = true
	return nil
}
