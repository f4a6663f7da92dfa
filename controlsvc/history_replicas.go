package controlsvc

import (
	"log/slog"
	"strings"
)

// historyReplicas runs create with 3 replicas, and again with 1 when the
// broker cannot place 3 (not a JetStream cluster, or too few servers),
// saying so in the log. (The same rule as the registry's; the integrator
// may fold the two into one helper.)
func historyReplicas(log *slog.Logger, what string, create func(replicas int) error) error {
	err := create(3)
	if err == nil {
		return nil
	}
	msg := strings.ToLower(err.Error())
	if !strings.Contains(msg, "non-clustered") && !strings.Contains(msg, "insufficient resources") &&
		!strings.Contains(msg, "replicas > 1 not supported") && !strings.Contains(msg, "no suitable peers") {
		return err
	}
	log.Info("JetStream cannot keep 3 replicas here; keeping 1", "store", what, "why", err)
	return create(1)
}
