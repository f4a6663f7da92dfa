package functions

import (
	"bufio"
	"bytes"
	"regexp"
	"strconv"
	"strings"
)

// ignoredDisks are the devices left out of disk I/O rates, as node_exporter's
// default --collector.diskstats.device-exclude does (plus optical drives and
// MMC partitions): RAM and loop devices, floppies, and partitions of whole
// disks, whose I/O their disk already counts. dm-* (LVM, crypt) are kept.
var ignoredDisks = regexp.MustCompile(`^(z?ram|loop|fd|sr|(h|s|v|xv)d[a-z]+|nvme\d+n\d+p|mmcblk\d+p)\d+$`)

// diskCounters are one device's cumulative I/O counters.
type diskCounters struct {
	name       string
	reads      uint64
	writes     uint64
	readBytes  uint64
	writeBytes uint64
	ioTimeMs   uint64 // time the device had I/O in flight
}

// parseDiskstats reads /proc/diskstats, leaving out [ignoredDisks]. Sectors
// there are always 512 bytes, whatever the device's sector size.
func parseDiskstats(data []byte) []diskCounters {
	var out []diskCounters
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 14 || ignoredDisks.MatchString(f[2]) {
			continue
		}
		n := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
		out = append(out, diskCounters{
			name:       f[2],
			reads:      n(3),
			readBytes:  n(5) * 512,
			writes:     n(7),
			writeBytes: n(9) * 512,
			ioTimeMs:   n(12),
		})
	}
	return out
}
