package pkgdb

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/internal/filestamp"
)

// AptLogPath is apt's log folder, relative to the root; history.log is
// rotated by logrotate to history.log.1.gz, history.log.2.gz, ….
const AptLogPath = "var/log/apt"

// Bounds on reading the history logs: each file's decompressed size, and
// the total over the current and rotated files (newest read first).
const (
	maxHistoryFileBytes  = 32 << 20
	maxHistoryTotalBytes = 64 << 20
)

// aptChange is one package of an apt history transaction.
type aptChange struct {
	Action string // Install, Upgrade, Downgrade, Reinstall, Remove or Purge
	Name   string
	Arch   string // "" in logs written before multiarch
	// Old is the version replaced (Upgrade, Downgrade) or removed (Remove,
	// Purge); New the version installed (Install, Upgrade, Downgrade,
	// Reinstall).
	Old, New  string
	Automatic bool
}

// aptTransaction is one block of apt's history.log.
type aptTransaction struct {
	Start, End  time.Time
	Commandline string
	RequestedBy string
	Changes     []aptChange
}

// when is the transaction's end, or its start when apt did not log an end
// (it was interrupted).
func (t aptTransaction) when() time.Time {
	if !t.End.IsZero() {
		return t.End
	}
	return t.Start
}

// historyActions are the fields of a history block that list packages.
var historyActions = map[string]bool{
	"Install": true, "Upgrade": true, "Downgrade": true, "Reinstall": true, "Remove": true, "Purge": true,
}

// parseHistoryLog parses apt's history.log: blocks separated by blank
// lines, each with Start-Date, Commandline, optionally Requested-By, one
// field per action (Install, Upgrade, …) and End-Date. Dates are written in
// the machine's local time without a zone; they are read in loc. A
// Start-Date without a blank line before it also begins a new block.
// Lines that are not fields, and entries that cannot be read, are skipped.
func parseHistoryLog(data []byte, loc *time.Location) []aptTransaction {
	var out []aptTransaction
	var cur aptTransaction
	open := false
	flush := func() {
		if open && (!cur.Start.IsZero() || !cur.End.IsZero() || len(cur.Changes) > 0) {
			out = append(out, cur)
		}
		cur, open = aptTransaction{}, false
	}
	for len(data) > 0 {
		var line []byte
		line, data = nextLine(data)
		line = bytes.TrimRight(line, " \t\r")
		if len(line) == 0 {
			flush()
			continue
		}
		key, value, ok := strings.Cut(string(line), ": ")
		if !ok {
			continue
		}
		switch {
		case key == "Start-Date":
			flush()
			cur.Start, open = historyDate(value, loc), true
		case key == "End-Date":
			cur.End, open = historyDate(value, loc), true
		case key == "Commandline":
			cur.Commandline, open = value, true
		case key == "Requested-By":
			cur.RequestedBy, open = value, true
		case historyActions[key]:
			cur.Changes, open = appendHistoryChanges(cur.Changes, key, value), true
		}
	}
	flush()
	return out
}

// historyDate reads "2025-06-24  14:36:25" (apt pads with two spaces) in loc.
func historyDate(s string, loc *time.Location) time.Time {
	t, err := time.ParseInLocation("2006-01-02 15:04:05", strings.Join(strings.Fields(s), " "), loc)
	if err != nil {
		return time.Time{}
	}
	return t
}

// appendHistoryChanges reads the entries of one action field:
// "name:arch (version[, version][, automatic]), …". Package names and
// Debian versions cannot hold commas or parentheses, so each entry runs to
// its closing parenthesis and the text inside splits on commas.
func appendHistoryChanges(out []aptChange, action, s string) []aptChange {
	for {
		s = strings.TrimLeft(s, ", ")
		pkg, rest, ok := strings.Cut(s, " (")
		if !ok {
			return out
		}
		inner, after, ok := strings.Cut(rest, ")")
		if !ok {
			return out
		}
		s = after
		c := aptChange{Action: action}
		c.Name, c.Arch, _ = strings.Cut(strings.TrimSpace(pkg), ":")
		if c.Name == "" || strings.ContainsAny(c.Name, " (,") {
			continue
		}
		var versions []string
		for _, v := range strings.Split(inner, ",") {
			switch v = strings.TrimSpace(v); v {
			case "":
			case "automatic":
				c.Automatic = true
			default:
				versions = append(versions, v)
			}
		}
		switch {
		case len(versions) == 0:
			continue
		case action == "Remove" || action == "Purge":
			c.Old = versions[0]
		case len(versions) >= 2:
			c.Old, c.New = versions[0], versions[1]
		default:
			c.New = versions[0]
		}
		out = append(out, c)
	}
}

// HistEvent is when a package version was last installed, and from which
// version it was upgraded.
type HistEvent struct {
	At       time.Time
	Previous string
}

// HistoryKey identifies a package version in the history index. The
// architecture is left out: apt logs arch-all packages under the native
// one, and Multi-Arch copies of a version are installed together.
func HistoryKey(name, version string) string { return name + "\x00" + version }

// indexHistory returns, for each package version, the most recent
// transaction that installed it (Install, Upgrade, Downgrade, Reinstall).
// A Reinstall keeps the previous version of the install before it.
func indexHistory(txs []aptTransaction) map[string]HistEvent {
	sorted := slicesSortedByTime(txs)
	idx := map[string]HistEvent{}
	for _, t := range sorted {
		at := t.when()
		for _, c := range t.Changes {
			if c.New == "" {
				continue
			}
			k := HistoryKey(c.Name, c.New)
			ev := HistEvent{At: at, Previous: c.Old}
			if c.Action == "Reinstall" {
				ev.Previous = idx[k].Previous
			}
			if c.Action == "Install" {
				ev.Previous = ""
			}
			idx[k] = ev
		}
	}
	return idx
}

// slicesSortedByTime returns the transactions oldest first (stable, so the
// file order decides between equal times).
func slicesSortedByTime(txs []aptTransaction) []aptTransaction {
	out := append([]aptTransaction(nil), txs...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].when().Before(out[j].when()) })
	return out
}

// historyFiles lists the history logs in dir, newest first: history.log,
// then history.log.1[.gz], history.log.2[.gz], ….
func historyFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	type file struct {
		name string
		n    int
	}
	var files []file
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		if name == "history.log" {
			files = append(files, file{name, 0})
			continue
		}
		num, ok := strings.CutPrefix(name, "history.log.")
		if !ok {
			continue
		}
		num = strings.TrimSuffix(num, ".gz")
		if n, err := strconv.Atoi(num); err == nil && n > 0 && n < 1000 {
			files = append(files, file{name, n})
		}
	}
	sort.SliceStable(files, func(i, j int) bool {
		if files[i].n != files[j].n {
			return files[i].n < files[j].n
		}
		return files[i].name < files[j].name
	})
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.name
	}
	return out, nil
}

// readHistoryFile reads one history log, gunzipping a .gz one, up to limit
// bytes; truncated reports a longer file.
func readHistoryFile(path string, limit int64) (data []byte, truncated bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return nil, false, err
		}
		defer gz.Close()
		r = gz
	}
	data, err = io.ReadAll(io.LimitReader(r, limit+1))
	if int64(len(data)) > limit {
		// Keep whole blocks only.
		data = data[:limit]
		if i := bytes.LastIndex(data, []byte("\n\n")); i >= 0 {
			data = data[:i+1]
		}
		return data, true, err
	}
	return data, false, err
}

// HistoryCache keeps the parsed history logs until a file in the log folder
// changes.
type HistoryCache struct {
	mu    sync.Mutex
	sig   string
	idx   map[string]HistEvent
	notes []string
}

// load returns the history index of root's apt logs and notes about what
// could not be read. Dates are read in the zone of root's /etc/localtime.
func (c *HistoryCache) Load(root string) (map[string]HistEvent, []string) {
	dir := filepath.Join(root, AptLogPath)
	sig := filestamp.Dir(dir)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idx != nil && sig == c.sig {
		return c.idx, c.notes
	}
	idx, notes := readHistory(dir, rootLocation(root))
	c.sig, c.idx, c.notes = sig, idx, notes
	return idx, notes
}

// readHistory reads and indexes every history log in dir, newest first,
// within maxHistoryTotalBytes.
func readHistory(dir string, loc *time.Location) (map[string]HistEvent, []string) {
	names, err := historyFiles(dir)
	if err != nil || len(names) == 0 {
		return map[string]HistEvent{}, []string{fmt.Sprintf(
			"no apt history log in %s: installed_on and previous_version are unknown", dir)}
	}
	var notes []string
	var txs []aptTransaction
	budget := int64(maxHistoryTotalBytes)
	for _, name := range names {
		if budget <= 0 {
			notes = append(notes, fmt.Sprintf("apt history logs past %s were not read (over %d MiB in all)", name, maxHistoryTotalBytes>>20))
			break
		}
		data, truncated, err := readHistoryFile(filepath.Join(dir, name), min(budget, maxHistoryFileBytes))
		if err != nil {
			notes = append(notes, fmt.Sprintf("apt history %s: %v", name, err))
		}
		if truncated {
			notes = append(notes, fmt.Sprintf("apt history %s: only its first %d MiB were read", name, min(budget, maxHistoryFileBytes)>>20))
		}
		budget -= int64(len(data))
		txs = append(txs, parseHistoryLog(data, loc)...)
	}
	return indexHistory(txs), notes
}

// rootLocation is the time zone apt wrote its logs in: root's
// /etc/localtime (an absolute symlink is followed inside root), else the
// agent's own local zone.
func rootLocation(root string) *time.Location {
	p := filepath.Join(root, "etc", "localtime")
	if target, err := os.Readlink(p); err == nil {
		if filepath.IsAbs(target) {
			p = filepath.Join(root, target)
		} else {
			p = filepath.Join(filepath.Dir(p), target)
		}
	}
	data, err := os.ReadFile(p)
	if err != nil || len(data) > 1<<20 {
		return time.Local
	}
	loc, err := time.LoadLocationFromTZData("Local", data)
	if err != nil {
		return time.Local
	}
	return loc
}
