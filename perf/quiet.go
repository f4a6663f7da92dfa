package perf

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// waitQuiet waits, at most 90 s, until the loopback's TIME_WAIT sockets
// from the previous phase have cleared. A fleet of 10,000 leaves about
// 20,000 of them for a minute; a fleet connecting meanwhile competes with
// them for ports and connects several times slower, which measured the
// previous phase rather than this one. Linux only; elsewhere it returns.
func waitQuiet(ctx context.Context, progress io.Writer) {
	const quiet = 2000
	deadline := time.Now().Add(90 * time.Second)
	said := false
	for {
		tw, ok := timeWaitSockets()
		if !ok || tw < quiet || time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		if !said {
			fmt.Fprintf(progress, "waiting for %d TIME_WAIT sockets of the previous phase to clear…\n", tw)
			said = true
		}
		time.Sleep(time.Second)
	}
}

// timeWaitSockets reads the TCP TIME_WAIT count from /proc/net/sockstat.
func timeWaitSockets() (int, bool) {
	f, err := os.Open("/proc/net/sockstat")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "TCP:" {
			continue
		}
		for i := 1; i+1 < len(fields); i += 2 {
			if fields[i] == "tw" {
				n, err := strconv.Atoi(fields[i+1])
				return n, err == nil
			}
		}
	}
	return 0, false
}
