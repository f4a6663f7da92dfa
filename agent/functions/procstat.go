package functions

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// cpuTimes are the cumulative jiffies of one "cpu" line of /proc/stat.
type cpuTimes struct {
	user, nice, system, idle, iowait, irq, softirq, steal, guest, guestNice float64
}

// total is every field but guest time, which the kernel already counts in
// user and nice.
func (c cpuTimes) total() float64 {
	return c.user + c.nice + c.system + c.idle + c.iowait + c.irq + c.softirq + c.steal
}

// busy is the time spent neither idle nor waiting for I/O.
func (c cpuTimes) busy() float64 { return c.total() - c.idle - c.iowait }

// procStat is what the agent reads from /proc/stat.
type procStat struct {
	total        cpuTimes
	perCPU       []cpuTimes
	procsRunning int
	procsBlocked int
}

// parseProcStat reads the cpu, cpuN, procs_running and procs_blocked lines
// of /proc/stat; other lines are ignored.
func parseProcStat(data []byte) (procStat, error) {
	var st procStat
	sawCPU := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		switch {
		case f[0] == "cpu":
			st.total, sawCPU = parseCPUFields(f[1:]), true
		case strings.HasPrefix(f[0], "cpu"):
			st.perCPU = append(st.perCPU, parseCPUFields(f[1:]))
		case f[0] == "procs_running":
			st.procsRunning, _ = strconv.Atoi(f[1])
		case f[0] == "procs_blocked":
			st.procsBlocked, _ = strconv.Atoi(f[1])
		}
	}
	if !sawCPU {
		return st, fmt.Errorf("no cpu line in /proc/stat")
	}
	return st, nil
}

// parseCPUFields reads up to ten jiffy counters; older kernels have fewer.
func parseCPUFields(f []string) cpuTimes {
	var v [10]float64
	for i := 0; i < len(f) && i < len(v); i++ {
		v[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return cpuTimes{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]}
}

// loadAvg is /proc/loadavg.
type loadAvg struct{ load1, load5, load15 float64 }

// parseLoadavg reads the first three fields of /proc/loadavg
// ("0.11 0.13 0.05 1/81 3742").
func parseLoadavg(text string) (loadAvg, error) {
	f := strings.Fields(text)
	if len(f) < 3 {
		return loadAvg{}, fmt.Errorf("/proc/loadavg: want at least 3 fields, got %q", text)
	}
	var v [3]float64
	for i := range v {
		x, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return loadAvg{}, fmt.Errorf("/proc/loadavg: field %d: %w", i+1, err)
		}
		v[i] = x
	}
	return loadAvg{v[0], v[1], v[2]}, nil
}

// parsePSI reads a /proc/pressure/* file ("some avg10=0.64 avg60=0.94
// avg300=0.96 total=5775240" and a "full" line) into keys like some_avg10
// and full_total. total is in microseconds.
func parsePSI(text string) (map[string]float64, error) {
	out := map[string]float64{}
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		kind := f[0]
		if kind != "some" && kind != "full" {
			return nil, fmt.Errorf("pressure line starts with %q, want some or full", kind)
		}
		for _, kv := range f[1:] {
			k, v, ok := strings.Cut(kv, "=")
			x, err := strconv.ParseFloat(v, 64)
			if !ok || err != nil {
				return nil, fmt.Errorf("pressure field %q is not key=number", kv)
			}
			out[kind+"_"+k] = x
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("pressure file is empty")
	}
	return out, nil
}
