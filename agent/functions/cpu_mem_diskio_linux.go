package functions

import (
	"context"
	"os"
	"path/filepath"
)

// readIOSample reads <root>/proc/stat and /proc/diskstats; the sampler
// stamps the reading with its clock.
func readIOSample(_ context.Context, root string) (*ioSample, error) {
	data, err := os.ReadFile(filepath.Join(root, "proc", "stat"))
	if err != nil {
		return nil, err
	}
	st, err := parseProcStat(data)
	if err != nil {
		return nil, err
	}
	s := &ioSample{cpu: st}
	if data, err := os.ReadFile(filepath.Join(root, "proc", "diskstats")); err == nil {
		s.disks = parseDiskstats(data)
	}
	return s, nil
}
