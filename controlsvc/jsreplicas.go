package controlsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The service's buckets and streams are replicated on three brokers when
// the brokers form a JetStream cluster that can place three copies, and
// kept once otherwise (the embedded default, a single cc-broker).
const (
	// wantReplicas is what a bucket or stream asks for first.
	wantReplicas = 3
)

// JetStream API error codes that mean "not three replicas here".
const (
	jsErrReplicasNotSupported = 10074 // replicas > 1 not supported in non-clustered mode
	jsErrInsufficientResource = 10023 // insufficient resources
	jsErrNoPeers              = 10005 // no suitable peers for placement (and other placement errors)
)

// createReplicated runs create (which makes or updates the bucket or
// stream what with the given replicas) with three replicas, and with one
// when the server says it cannot place three: a broker that is not
// clustered, or a cluster with fewer than three JetStream servers or too
// little room on them. It logs which it got and returns it.
func createReplicated(log *slog.Logger, what string, create func(replicas int) error) (int, error) {
	err := whenReady(log, what, func() error { return create(wantReplicas) })
	if err == nil {
		log.Info("JetStream store replicated", "store", what, "replicas", wantReplicas)
		return wantReplicas, nil
	}
	if !cannotReplicate(err) {
		return 0, err
	}
	if err1 := whenReady(log, what, func() error { return create(1) }); err1 != nil {
		return 0, fmt.Errorf("%s: with %d replicas: %v; with 1: %w", what, wantReplicas, err, err1)
	}
	// A single broker (the embedded default) is the common case, not news;
	// a cluster that cannot place three copies is worth a warning.
	level := slog.LevelWarn
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrReplicasNotSupported {
		level = slog.LevelDebug
	}
	log.Log(context.Background(), level, "JetStream store kept on one broker (no JetStream cluster of three to replicate it on)",
		"store", what, "replicas", 1, "why", err.Error())
	return 1, nil
}

// jsNotReadyWait is how long a store's creation is tried again while
// the JetStream cluster is not ready: one that has just (re)started elects
// its meta leader and then each stream's, and until then the API times
// out or answers "temporarily unavailable". (Real time: a retry's
// patience, not a decision a test's clock makes.)
var jsNotReadyWait = 2 * time.Minute

// jsErrClusterNotAvailable is "JetStream system temporarily unavailable".
const jsErrClusterNotAvailable = 10008

// whenReady runs create, and again every half second while it fails
// because the cluster is not ready, for up to jsNotReadyWait, saying so.
func whenReady(log *slog.Logger, what string, create func() error) error {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		err := create()
		if err == nil || !notReady(err) || time.Since(start) >= jsNotReadyWait {
			return err
		}
		log.Warn("JetStream is not ready for a store yet; trying again (a cluster elects its leaders after a start)",
			"store", what, "attempt", attempt, "error", err)
		time.Sleep(500 * time.Millisecond)
	}
}

// notReady reports whether err is JetStream not answering yet, as opposed
// to refusing.
func notReady(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jsErrClusterNotAvailable
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
}

// cannotReplicate reports whether err is the server refusing to place
// more than one replica (as opposed to any other failure).
func cannotReplicate(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case jsErrReplicasNotSupported, jsErrInsufficientResource, jsErrNoPeers:
		return true
	}
	return false
}
