package functions

import (
	"context"
	"os"
	"path/filepath"
	"time"
)

// readIOSample reads <root>/proc/stat and /proc/diskstats.
func readIOSample(_ context.Context, root string) (*ioSample, error) {
	at := time.Now()
	data, err := os.ReadFile(filepath.Join(root, "proc", "stat"))
	if err != nil {
		return nil, err
	}
	st, err := parseProcStat(data)
	if err != nil {
		return nil, err
	}
	s := &ioSample{at: at, cpu: st}
	if data, err := os.ReadFile(filepath.Join(root, "proc", "diskstats")); err == nil {
		s.disks = parseDiskstats(data)
	}
	return s, nil
}
