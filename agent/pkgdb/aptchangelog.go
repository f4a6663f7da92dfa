package pkgdb

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/internal/filestamp"
)

// DocPath is where packages install their documentation, changelogs
// included, relative to the root.
const DocPath = "usr/share/doc"

// Bounds on reading a changelog, which is package-supplied text: at most
// maxChangelogBytes decompressed bytes, maxChangelogLine bytes a line,
// maxChangelogEntries entries and maxChangelogCVEs distinct ids are looked
// at. Parsing stops as soon as the entries wanted have been read, so a
// typical call decompresses only the first few hundred bytes.
const (
	maxChangelogBytes   = 4 << 20
	maxChangelogLine    = 64 << 10
	maxChangelogEntries = 1000
	maxChangelogCVEs    = 1000
)

// changelogNames are the changelog files tried in a doc folder, in order.
var changelogNames = []string{"changelog.Debian.gz", "changelog.Debian"}

// cveRE matches a CVE id; the case of "CVE" is normalised on output.
var cveRE = regexp.MustCompile(`(?i)\bCVE-[0-9]{4}-[0-9]{4,19}\b`)

// ChangelogInfo is what a Debian changelog tells about one installed version.
type ChangelogInfo struct {
	// Found is true when the changelog has an entry for the version.
	Found bool
	// Date is that entry's trailer date, in the zone it was written in.
	Date time.Time
	// Distribution is that entry's distribution (bookworm-security, …).
	Distribution string
	// CVEs are the distinct CVE ids, in numeric order, named in that entry and, when a
	// previous version is given, in every entry newer than it.
	CVEs []string
	// Entries counts the entries looked at.
	Entries int
}

// parseChangelog reads a Debian changelog (newest entry first) and returns
// what its entries say about version: the entry's date and the CVE ids it
// names. Entries begin with a line "source (version) distribution;
// urgency=…" at column 0 and end with " -- Maintainer <mail>  date".
//
// With previous set (the version the package was upgraded from, lower than
// version), the CVE ids of the entries from version's down to the first
// one not newer than previous are collected: an upgrade that skipped
// security uploads brings their fixes too. Reading stops at the first entry not wanted, so only the
// top of a long changelog is read. The error is a read error (a corrupt
// gzip stream, an over-long line); what was parsed before it is returned.
func parseChangelog(r io.Reader, version, previous string) (ChangelogInfo, error) {
	var info ChangelogInfo
	if previous != "" && CompareDebVersions(previous, version) >= 0 {
		previous = "" // a downgrade or reinstall: only the version's own entry counts
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxChangelogLine)
	var cves []string
	collecting, inTarget := false, false
	for sc.Scan() {
		line := sc.Text()
		if v, dist, ok := changelogHeader(line); ok {
			info.Entries++
			if info.Entries > maxChangelogEntries {
				break
			}
			inTarget = false
			if info.Found {
				// Below the installed version's entry the file's order
				// is the package's history (a ~deb12u1 backport's
				// ancestor 590-2.1 sorts higher than it): collect down
				// to the first entry not newer than previous.
				if previous == "" || CompareDebVersions(v, previous) <= 0 {
					break
				}
				collecting = true
				continue
			}
			c := CompareDebVersions(v, version)
			if c > 0 { // a newer entry: another package's doc folder, or a shared one
				collecting = false
				continue
			}
			if c < 0 { // older than the installed version, which has no entry
				break
			}
			collecting, inTarget = true, true
			info.Found, info.Distribution = true, dist
			continue
		}
		if !collecting {
			continue
		}
		if rest, ok := strings.CutPrefix(line, " -- "); ok {
			if inTarget && info.Date.IsZero() {
				info.Date = changelogDate(rest)
			}
			continue
		}
		for _, id := range cveRE.FindAllString(line, -1) {
			if len(cves) < maxChangelogCVEs {
				cves = append(cves, strings.ToUpper(id))
			}
		}
	}
	if len(cves) > 0 {
		slices.SortFunc(cves, compareCVEs)
		info.CVEs = slices.Compact(cves)
	}
	return info, sc.Err()
}

// compareCVEs orders CVE ids by year, then number (CVE-2025-9230 before
// CVE-2025-15467). Both are "CVE-yyyy-n…" as cveRE matches them.
func compareCVEs(a, b string) int {
	if c := strings.Compare(a[:8], b[:8]); c != 0 {
		return c
	}
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// changelogHeader recognises the first line of a changelog entry,
// "source (version) distribution(s); urgency=…", returning the version and
// the distribution(s).
func changelogHeader(line string) (version, dist string, ok bool) {
	if line == "" || line[0] == ' ' || line[0] == '\t' {
		return "", "", false
	}
	name, rest, ok := strings.Cut(line, " (")
	if !ok || name == "" || strings.ContainsAny(name, " \t") {
		return "", "", false
	}
	version, rest, ok = strings.Cut(rest, ")")
	if !ok || version == "" || strings.ContainsAny(version, " \t(") {
		return "", "", false
	}
	dist, _, ok = strings.Cut(rest, ";")
	if !ok || !strings.HasPrefix(dist, " ") {
		return "", "", false
	}
	return version, strings.TrimSpace(dist), true
}

// changelogDate reads the date of a trailer line, "Maintainer <mail>  Fri,
// 03 Apr 2026 14:29:32 +0200" (the " -- " already cut); the zero time when
// it cannot. The date follows the mail address (or the last double space);
// a trailing comment such as "(CET)" is ignored.
func changelogDate(trailer string) time.Time {
	s := trailer
	if i := strings.LastIndexByte(s, '>'); i >= 0 {
		s = s[i+1:]
	} else if i := strings.LastIndex(s, "  "); i >= 0 {
		s = s[i:]
	}
	f := strings.Fields(s)
	if len(f) > 0 && strings.HasSuffix(f[0], ",") { // the weekday is optional and not checked
		f = f[1:]
	}
	if len(f) < 5 {
		return time.Time{}
	}
	t, err := time.Parse("2 Jan 2006 15:04:05 -0700", strings.Join(f[:5], " "))
	if err != nil {
		return time.Time{}
	}
	return t
}

// ChangelogCache keeps each changelog's answer until the file changes, and
// which packages have no changelog file until the doc folder changes
// (stat of a missing file is not free, and minimal images leave out
// /usr/share/doc altogether).
type ChangelogCache struct {
	mu       sync.Mutex
	m        map[string]changelogCached
	docStamp string
	missing  map[string]bool // name, source and version without a changelog
}

type changelogCached struct {
	size              int64
	mtime             time.Time
	version, previous string
	info              ChangelogInfo
	err               error
}

// maxChangelogCache bounds the cache; it is emptied when it grows past this
// (packages come and go over an agent's life).
const maxChangelogCache = 8192

// refresh forgets which packages had no changelog when root's doc folder
// has changed (a package's doc folder is created or removed with it). Call
// it once before a round of lookups.
func (c *ChangelogCache) Refresh(root string) {
	var b strings.Builder
	filestamp.File(&b, filepath.Join(root, DocPath))
	c.mu.Lock()
	defer c.mu.Unlock()
	if b.String() != c.docStamp || c.missing == nil {
		c.docStamp, c.missing = b.String(), map[string]bool{}
	}
}

// lookup finds the changelog of a package under root (its own doc folder,
// else its source package's) and returns what it says about version since
// previous. ok is false when there is no changelog file at all.
func (c *ChangelogCache) Lookup(root, name, source, version, previous string) (info ChangelogInfo, path string, ok bool, err error) {
	key := name + "\x00" + source + "\x00" + version
	c.mu.Lock()
	known := c.missing[key]
	c.mu.Unlock()
	if known {
		return ChangelogInfo{}, "", false, nil
	}
	path, st, ok := findChangelog(root, name, source)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !ok {
		if c.missing != nil && len(c.missing) < maxChangelogCache {
			c.missing[key] = true
		}
		return ChangelogInfo{}, "", false, nil
	}
	if e, hit := c.m[path]; hit && e.size == st.Size() && e.mtime.Equal(st.ModTime()) && e.version == version && e.previous == previous {
		return e.info, path, true, e.err
	}
	info, err = readChangelog(path, version, previous)
	if c.m == nil || len(c.m) >= maxChangelogCache {
		c.m = map[string]changelogCached{}
	}
	c.m[path] = changelogCached{size: st.Size(), mtime: st.ModTime(), version: version, previous: previous, info: info, err: err}
	return info, path, true, err
}

// findChangelog returns the first changelog file among
// usr/share/doc/{name,source}/changelog.Debian{.gz,}.
func findChangelog(root, name, source string) (string, os.FileInfo, bool) {
	dirs := []string{name}
	if source != "" && source != name {
		dirs = append(dirs, source)
	}
	for _, d := range dirs {
		if d == "" || strings.ContainsAny(d, `/\`) || d == "." || d == ".." {
			continue
		}
		for _, n := range changelogNames {
			p := filepath.Join(root, DocPath, d, n)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				return p, st, true
			}
		}
	}
	return "", nil, false
}

// readChangelog opens a changelog, gunzipping a .gz one, and parses at most
// maxChangelogBytes of it.
func readChangelog(path, version, previous string) (ChangelogInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return ChangelogInfo{}, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return ChangelogInfo{}, fmt.Errorf("%s: %w", path, err)
		}
		defer gz.Close()
		r = gz
	}
	info, err := parseChangelog(io.LimitReader(r, maxChangelogBytes), version, previous)
	if err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("a line is longer than %d bytes", maxChangelogLine)
		}
		err = fmt.Errorf("%s: %w", path, err)
	}
	return info, err
}
