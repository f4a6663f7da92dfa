package functions

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CgroupMemory is the memory limit of the cgroup the agent runs in (a
// container's, or a systemd unit's MemoryMax), and its current use.
type CgroupMemory struct {
	Version    int    `json:"version"`
	Path       string `json:"path"`
	LimitBytes uint64 `json:"limit_bytes"`
	UsageBytes uint64 `json:"usage_bytes,omitempty"`
	// UsedPercent is usage against the limit.
	UsedPercent float64 `json:"used_percent,omitempty"`
}

// v1Unlimited: cgroup v1 reports "no limit" as the largest page-aligned
// int64 (9223372036854771712); anything this large is no limit.
const v1Unlimited = math.MaxInt64 / 2

// readCgroupMemory finds the agent's memory cgroup through
// <root>/proc/self/cgroup and reads its limit under <root>/sys/fs/cgroup:
// v2 memory.max and memory.current, or v1 memory.limit_in_bytes and
// memory.usage_in_bytes. It tries the cgroup's own folder, then the mount
// root (where a container with a cgroup namespace sees its own cgroup).
// It returns nil when there is no cgroup or no limit.
func readCgroupMemory(root string) *CgroupMemory {
	data, err := os.ReadFile(filepath.Join(root, "proc", "self", "cgroup"))
	if err != nil {
		return nil
	}
	base := filepath.Join(root, "sys", "fs", "cgroup")
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			if m := cgroupLimit(2, parts[2], []string{filepath.Join(base, parts[2]), base}, "memory.max", "memory.current"); m != nil {
				return m
			}
		case hasController(parts[1], "memory"):
			dir := filepath.Join(base, "memory")
			if m := cgroupLimit(1, parts[2], []string{filepath.Join(dir, parts[2]), dir}, "memory.limit_in_bytes", "memory.usage_in_bytes"); m != nil {
				return m
			}
		}
	}
	return nil
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// cgroupLimit reads the limit file in the first of dirs that has it.
func cgroupLimit(version int, path string, dirs []string, limitFile, usageFile string) *CgroupMemory {
	for _, dir := range dirs {
		text, err := os.ReadFile(filepath.Join(dir, limitFile))
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(text))
		limit, err := strconv.ParseUint(s, 10, 64)
		if s == "max" || err != nil || limit == 0 || limit >= v1Unlimited {
			return nil
		}
		m := &CgroupMemory{Version: version, Path: path, LimitBytes: limit}
		if u, err := os.ReadFile(filepath.Join(dir, usageFile)); err == nil {
			m.UsageBytes, _ = strconv.ParseUint(strings.TrimSpace(string(u)), 10, 64)
			m.UsedPercent = round2(float64(m.UsageBytes) / float64(limit) * 100)
		}
		return m
	}
	return nil
}
