package cli

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// How `cc-bench call` shows the replies of each built-in function: a row
// per machine (its summary line: the columns), a table of the list the
// function returns where one fits (packages, pending updates), and the
// notes the agent added (an expired apt index). Every accessor reads the
// result as untrusted JSON: a missing or mistyped field shows as "-".

// builtinView is a built-in function's rendering.
type builtinView struct {
	columns []column // after STATUS, one row per machine
	csv     []string // CSV columns (dotted paths) of a machine without a list
	list    *listView
	notes   func(res any) []string
	summary []string // the fields --summary sums without --fields
}

// column is a table column: its header and the cell of a result.
type column struct {
	head string
	text func(res any) string
}

// listView is an array in the result shown as its own table, a row per
// element, and exported to CSV a row per element.
type listView struct {
	title   string // "Pending security updates"
	what    string // "packages", in the line that says they were not listed
	path    string // the array
	columns []column
	csv     []string // per element: paths inside the element
	csvHead []string // per machine, before the element's: paths in the result
	limit   int      // most rows in a table (0: no limit)
	narrow  string   // how to narrow a list over the limit
}

// builtinViews are the built-in functions' renderings.
var builtinViews = map[string]*builtinView{
	fleet.FnMachineInfo: {
		columns: []column{
			colText("HOSTNAME", "hostname"),
			{"PLATFORM", func(res any) string {
				p := textOr(res, "platform", "")
				if p == "" {
					p = textOr(res, "os", "")
				}
				return dash(strings.TrimSpace(p + " " + textOr(res, "platform_version", "")))
			}},
			colText("KERNEL", "kernel_version"),
			colText("ARCH", "arch"),
			colText("CPUS", "cpu.logical"),
			colBytes("MEMORY", "memory_total_bytes"),
			{"UPTIME", func(res any) string {
				v, _ := lookupPath(res, "uptime_seconds")
				if f, ok := number(v); ok {
					return ageText(time.Duration(f) * time.Second)
				}
				return "-"
			}},
			{"VIRT", func(res any) string {
				s, r := textOr(res, "virtualization.system", ""), textOr(res, "virtualization.role", "")
				if s == "" {
					return "-"
				}
				if r != "" {
					s += "/" + r
				}
				return s
			}},
			{"IPS", func(res any) string {
				ips := stringList(res, "ips")
				if len(ips) > 3 {
					return fmt.Sprintf("%s (+%d)", strings.Join(ips[:3], ","), len(ips)-3)
				}
				return dash(strings.Join(ips, ","))
			}},
		},
		csv: []string{"hostname", "os", "platform", "platform_version", "kernel_version", "arch", "cpu.model", "cpu.logical",
			"cpu.physical", "memory_total_bytes", "uptime_seconds", "boot_time", "virtualization.system", "virtualization.role",
			"container.runtime", "agent_version", "ips"},
		summary: []string{"cpu.logical", "memory_total_bytes", "uptime_seconds"},
	},
	fleet.FnCurrentLoad: {
		columns: []column{
			colText("LOAD1", "load1"), colText("LOAD5", "load5"), colText("LOAD15", "load15"), colText("CPUS", "cpus"),
			colText("RUNNING", "procs_running"), colText("BLOCKED", "procs_blocked"),
			colPercent("PSI CPU", "pressure.cpu.some_avg10"), colPercent("PSI MEM", "pressure.memory.some_avg10"),
			colPercent("PSI IO", "pressure.io.some_avg10"),
		},
		csv: []string{"load1", "load5", "load15", "cpus", "procs_running", "procs_blocked",
			"pressure.cpu.some_avg10", "pressure.memory.some_avg10", "pressure.memory.full_avg10",
			"pressure.io.some_avg10", "pressure.io.full_avg10", "emulated"},
		summary: []string{"load1", "load5", "load15", "cpus", "procs_running", "procs_blocked",
			"pressure.cpu.some_avg10", "pressure.memory.some_avg10", "pressure.io.some_avg10"},
		notes: func(res any) []string {
			if v, _ := lookupPath(res, "emulated"); v == true {
				return []string{"no load average on Windows: estimated from the processor queue length"}
			}
			return nil
		},
	},
	fleet.FnCurrentCPUMemDiskIO: {
		columns: []column{
			colPercent("CPU", "cpu_percent"),
			{"MEMORY", func(res any) string { return usedOf(res, "memory.used_percent", "memory.total") }},
			{"SWAP", func(res any) string { return usedOf(res, "swap.used_percent", "swap.total") }},
			{"CGROUP", func(res any) string { return usedOf(res, "cgroup_memory.used_percent", "cgroup_memory.limit_bytes") }},
			{"DISK READ", func(res any) string { return diskRate(res, "read_bytes_per_sec") }},
			{"DISK WRITE", func(res any) string { return diskRate(res, "write_bytes_per_sec") }},
			{"BUSIEST DISK", busiestDisk},
		},
		csv: []string{"cpu_percent", "memory.total", "memory.used", "memory.available", "memory.used_percent",
			"swap.total", "swap.used", "swap.used_percent", "cgroup_memory.limit_bytes", "cgroup_memory.usage_bytes",
			"cgroup_memory.used_percent", "sample_interval_seconds", "sampled_at", "warming_up"},
		summary: []string{"cpu_percent", "memory.used_percent", "memory.used", "memory.available", "swap.used_percent",
			"cgroup_memory.used_percent"},
		notes: func(res any) []string {
			notes := stringList(res, "notes")
			if v, _ := lookupPath(res, "warming_up"); v == true {
				notes = append([]string{"warming up: no CPU or disk rates yet; call again"}, notes...)
			}
			return notes
		},
	},
	fleet.FnSwList: {
		columns: []column{colText("MANAGER", "manager"), colText("PACKAGES", "count")},
		summary: []string{"count"},
		list: &listView{
			title: "Packages", what: "packages", path: "packages",
			columns: []column{colText("PACKAGE", "name"), colText("VERSION", "version"), colText("ARCH", "arch"),
				{"INSTALLED", func(el any) string { return dateText(textOr(el, "install_time", "")) }}},
			csvHead: []string{"manager"},
			csv:     []string{"name", "version", "arch", "source", "source_version", "vendor", "install_time"},
			limit:   200,
			narrow:  "--arg name=PATTERN",
		},
	},
	fleet.FnInstalledSecPatches: {
		columns: []column{
			colText("SOURCE", "source"), colText("PENDING", "pending_count"), colText("INSTALLED", "installed_count"),
			{"CVES FIXED", func(res any) string {
				arr, ok := lookupPath(res, "installed")
				list, _ := arr.([]any)
				if !ok || list == nil {
					return "-"
				}
				seen := map[string]bool{}
				for _, el := range list {
					for _, c := range stringList(el, "cves") {
						seen[c] = true
					}
				}
				return fmt.Sprint(len(seen))
			}},
			{"INDEX", indexText},
		},
		list: &listView{
			title: "Pending security updates", what: "pending updates", path: "pending",
			columns: []column{colText("PACKAGE", "name"), colText("ARCH", "arch"), colText("INSTALLED", "installed"),
				colText("AVAILABLE", "available"), {"ADVISORY", advisoryText}, colText("SEVERITY", "severity")},
			csvHead: []string{"source"},
			csv:     []string{"name", "arch", "installed", "available", "source", "advisory", "severity", "cves"},
			limit:   500,
			narrow:  "--arg name=PATTERN (or see the fleet by package: cc-bench report patches)",
		},
		notes:   func(res any) []string { return stringList(res, "notes") },
		summary: []string{"pending_count", "installed_count"},
	},
}

func colText(head, path string) column {
	return column{head, func(res any) string { return textOr(res, path, "-") }}
}

func colPercent(head, path string) column {
	return column{head, func(res any) string {
		v, _ := lookupPath(res, path)
		if f, ok := number(v); ok {
			return numText(f) + "%"
		}
		return "-"
	}}
}

func colBytes(head, path string) column {
	return column{head, func(res any) string {
		v, _ := lookupPath(res, path)
		if f, ok := number(v); ok && f >= 0 {
			return bytesText(f)
		}
		return "-"
	}}
}

// textOr returns the cell text of path in v, or def when it is missing,
// null or empty.
func textOr(v any, path, def string) string {
	x, ok := lookupPath(v, path)
	if !ok {
		return def
	}
	if s := valueText(x); s != "" {
		return s
	}
	return def
}

// stringList returns the strings of the array at path.
func stringList(v any, path string) []string {
	x, _ := lookupPath(v, path)
	arr, _ := x.([]any)
	var out []string
	for _, e := range arr {
		if s, ok := str(e); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}

// usedOf renders "62% of 15.5GiB".
func usedOf(res any, pctPath, totalPath string) string {
	p, _ := lookupPath(res, pctPath)
	t, _ := lookupPath(res, totalPath)
	pct, okP := number(p)
	total, okT := number(t)
	switch {
	case okP && okT && total > 0:
		return numText(pct) + "% of " + bytesText(total)
	case okP:
		return numText(pct) + "%"
	}
	return "-"
}

// diskRate sums a rate over the disks: "1.5MiB/s".
func diskRate(res any, field string) string {
	x, _ := lookupPath(res, "disks")
	disks, _ := x.([]any)
	sum, seen := 0.0, false
	for _, d := range disks {
		v, _ := lookupPath(d, field)
		if f, ok := number(v); ok && f >= 0 {
			sum, seen = sum+f, true
		}
	}
	if !seen {
		return "-"
	}
	return bytesText(sum) + "/s"
}

// busiestDisk names the disk with the highest utilisation: "sda 12%".
func busiestDisk(res any) string {
	x, _ := lookupPath(res, "disks")
	disks, _ := x.([]any)
	best, bestName := -1.0, ""
	for _, d := range disks {
		v, _ := lookupPath(d, "util_percent")
		if f, ok := number(v); ok && f > best {
			best, bestName = f, textOr(d, "name", "?")
		}
	}
	if best < 0 {
		return "-"
	}
	return bestName + " " + numText(best) + "%"
}

// dateText shortens an RFC 3339 time to its date; anything else stays.
func dateText(s string) string {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.Format("2006-01-02")
	}
	return dash(s)
}

// advisoryText is a pending update's advisory and CVE ids.
func advisoryText(el any) string {
	ids := stringList(el, "cves")
	if a := textOr(el, "advisory", ""); a != "" {
		ids = append([]string{a}, ids...)
	}
	if len(ids) == 0 {
		return "-"
	}
	return strings.Join(ids, ",")
}

// indexText describes apt's security indexes: the suites and the
// earliest Valid-Until, "expired" when the agent noted so.
func indexText(res any) string {
	x, _ := lookupPath(res, "security_index")
	idx, _ := x.([]any)
	if len(idx) == 0 {
		return "-"
	}
	var suites []string
	var until string
	for _, s := range idx {
		if name := textOr(s, "suite", ""); name != "" && !slices.Contains(suites, name) {
			suites = append(suites, name)
		}
		if u := textOr(s, "valid_until", ""); u != "" && (until == "" || u < until) {
			until = u
		}
	}
	sort.Strings(suites)
	out := strings.Join(suites, ",")
	for _, n := range stringList(res, "notes") {
		if strings.Contains(n, " expired on ") {
			return out + " EXPIRED " + dateText(until)
		}
	}
	if until != "" {
		out += " until " + dateText(until)
	}
	return out
}
