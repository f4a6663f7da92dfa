package controlsvc

import (
	"context"
	"time"
)

// resyncLoop resyncs every resyncInterval, and at once when asked
// (resyncSoon), until ctx ends; presence is saved after each.
func (tr *presenceTracker) resyncLoop(ctx context.Context) {
	t := time.NewTicker(tr.resyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-tr.resyncNow:
		}
		// Sites' parts go on in the background (one at a time per site):
		// a slow site does not hold up the hub's next resync.
		if err := tr.resyncParts(ctx, false); err != nil && ctx.Err() == nil {
			tr.log.Warn("presence resync failed", "error", err)
		}
		tr.savePresence()
	}
}
