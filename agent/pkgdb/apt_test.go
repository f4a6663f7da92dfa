package pkgdb

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/pkgdb/pkgdbtest"
)

// docRoot holds the fixture changelogs, usr/share/doc/<pkg>/changelog.Debian.gz.
const docRoot = debianRoot + "/" + DocPath

// readGz returns the decompressed content of a fixture.
func readGz(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(gz)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// describeChangelog prints a ChangelogInfo for comparison.
func describeChangelog(info ChangelogInfo) string {
	date := "-"
	if !info.Date.IsZero() {
		date = info.Date.Format(time.RFC3339)
	}
	return fmt.Sprintf("found=%v dist=%s date=%s cves=%v", info.Found, info.Distribution, date, info.CVEs)
}

func TestParseChangelogFixtures(t *testing.T) {
	tests := []struct {
		pkg, version, previous, want string
	}{
		{"openssl", "3.0.19-1~deb12u2", "",
			"found=true dist=bookworm-security date=2026-04-03T14:29:32+02:00 cves=[CVE-2026-28387 CVE-2026-28389 CVE-2026-28390 CVE-2026-31789 CVE-2026-31790]"},
		{"libssl3", "3.0.19-1~deb12u2", "",
			"found=true dist=bookworm-security date=2026-04-03T14:29:32+02:00 cves=[CVE-2026-28387 CVE-2026-28389 CVE-2026-28390 CVE-2026-31789 CVE-2026-31790]"},
		// The history log's upgrade from 3.0.16-1~deb12u1: every entry since.
		{"openssl", "3.0.19-1~deb12u2", "3.0.16-1~deb12u1",
			"found=true dist=bookworm-security date=2026-04-03T14:29:32+02:00 cves=[CVE-2025-9230 CVE-2025-9232 CVE-2025-15467 CVE-2025-68160 CVE-2025-69418 " +
				"CVE-2025-69419 CVE-2025-69420 CVE-2025-69421 CVE-2026-22795 CVE-2026-22796 CVE-2026-28387 CVE-2026-28389 CVE-2026-28390 CVE-2026-31789 CVE-2026-31790]"},
		// A security upload that names no CVE id.
		{"less", "590-2.1~deb12u2", "", "found=true dist=bookworm-security date=2024-05-02T20:30:51+02:00 cves=[]"},
		{"less", "590-2.1~deb12u2", "590-2", "found=true dist=bookworm-security date=2024-05-02T20:30:51+02:00 cves=[CVE-2022-48624 CVE-2024-32487]"},
		{"libexpat1", "2.5.0-1+deb12u1", "",
			"found=true dist=bookworm-security date=2024-09-08T08:44:19+02:00 cves=[CVE-2024-45490 CVE-2024-45491 CVE-2024-45492]"},
		// Not a security update: a stable point release.
		{"curl", "7.88.1-10+deb12u14", "", "found=true dist=bookworm date=2025-07-19T21:04:59+02:00 cves=[]"},
		{"curl", "7.88.1-10+deb12u14", "7.88.1-10+deb12u12", "found=true dist=bookworm date=2025-07-19T21:04:59+02:00 cves=[CVE-2023-27534]"},
		// An older entry of the changelog.
		{"curl", "7.88.1-10+deb12u11", "", "found=true dist=bookworm date=2025-02-10T11:45:37+01:00 cves=[CVE-2025-0167]"},
		// A version the changelog does not have.
		{"openssl", "3.0.99-1", "", "found=false dist= date=- cves=[]"},
		{"less", "590-2.1~deb12u3", "590-2", "found=false dist= date=- cves=[]"},
		// A downgrade: the previous version is newer, so only the entry counts.
		{"less", "590-2.1~deb12u1", "590-2.1~deb12u2", "found=true dist=bookworm-security date=2024-04-19T20:58:00+02:00 cves=[]"},
	}
	for _, tt := range tests {
		data := readGz(t, docRoot+"/"+tt.pkg+"/changelog.Debian.gz")
		info, err := parseChangelog(bytes.NewReader(data), tt.version, tt.previous)
		if err != nil {
			t.Fatalf("%s: %v", tt.pkg, err)
		}
		if got := describeChangelog(info); got != tt.want {
			t.Errorf("%s %s since %q:\ngot  %q\nwant %q", tt.pkg, tt.version, tt.previous, got, tt.want)
		}
	}
}

func TestParseChangelogStopsEarly(t *testing.T) {
	// Without a previous version only the first entry and the next header
	// are read; with "0~" (older than anything) every entry is, which
	// checks the header recognition against the fixtures' entry counts.
	tests := []struct {
		pkg, version        string
		entries, allEntries int
	}{
		{"openssl", "3.0.19-1~deb12u2", 2, 51},
		{"libssl3", "3.0.19-1~deb12u2", 2, 51},
		{"less", "590-2.1~deb12u2", 2, 9},
		{"libexpat1", "2.5.0-1+deb12u1", 2, 23},
		{"curl", "7.88.1-10+deb12u14", 2, 54},
	}
	for _, tt := range tests {
		data := readGz(t, docRoot+"/"+tt.pkg+"/changelog.Debian.gz")
		info, _ := parseChangelog(bytes.NewReader(data), tt.version, "")
		all, _ := parseChangelog(bytes.NewReader(data), tt.version, "0~")
		if got, want := fmt.Sprint(info.Entries, all.Entries), fmt.Sprint(tt.entries, tt.allEntries); got != want {
			t.Errorf("%s: got %q entries, want %q", tt.pkg, got, want)
		}
	}
}

func TestParseChangelogTable(t *testing.T) {
	entry := func(src, ver, dist, body, date string) string {
		return fmt.Sprintf("%s (%s) %s; urgency=medium\n\n%s\n\n -- A Maintainer <a@example.org>  %s\n\n", src, ver, dist, body, date)
	}
	tests := []struct {
		name, text, version, previous, want string
	}{
		{"newer entries skipped (shared doc folder)",
			entry("p", "2.0-1", "unstable", "  * CVE-2030-0001", "Mon, 01 Jan 2024 10:00:00 +0000") +
				entry("p", "1.0-1+deb12u1", "bookworm-security", "  * Fix cve-2023-12345 and CVE-2023-12345.\n  * CVE-2023-0001x is not an id", "Tue, 2 Jan 2024 10:00:00 -0500"),
			"1.0-1+deb12u1", "", "found=true dist=bookworm-security date=2024-01-02T10:00:00-05:00 cves=[CVE-2023-12345]"},
		{"range, epoch", entry("p", "1:2.0-2", "jammy-security", "  * CVE-2024-1111", "Wed, 03 Jan 2024 00:00:00 +0100") +
			entry("p", "1:2.0-1", "jammy", "  * CVE-2024-2222, CVE-2024-1111", "Tue, 02 Jan 2024 00:00:00 +0100") +
			entry("p", "1:1.0-1", "jammy", "  * CVE-2020-3333", "Mon, 01 Jan 2024 00:00:00 +0100"),
			"1:2.0-2", "1:1.0-1", "found=true dist=jammy-security date=2024-01-03T00:00:00+01:00 cves=[CVE-2024-1111 CVE-2024-2222]"},
		{"no weekday, comment after the zone",
			"p (1) stable; urgency=low\n  * CVE-2022-123456789\n -- M <m@x>  3 Feb 2022 01:02:03 +0000 (UTC)\n",
			"1", "", "found=true dist=stable date=2022-02-03T01:02:03Z cves=[CVE-2022-123456789]"},
		{"numeric order", "p (1) s; urgency=high\n  * CVE-2024-10000, CVE-2023-99999, CVE-2024-9999, CVE-2023-5\n", "1", "",
			"found=true dist=s date=- cves=[CVE-2023-99999 CVE-2024-9999 CVE-2024-10000]"},
		{"bad date", "p (1) stable; urgency=low\n -- M <m@x>  yesterday\n", "1", "", "found=true dist=stable date=- cves=[]"},
		{"not headers", "Old Changelog:\n(1) x;\np 1 stable;\np (1 stable;\np (1) stable\n", "1", "", "found=false dist= date=- cves=[]"},
		{"CRLF", "p (1) s-security; urgency=high\r\n  * CVE-2021-44228\r\n -- M <m@x>  Fri, 10 Dec 2021 10:00:00 +0000\r\n", "1", "",
			"found=true dist=s-security date=2021-12-10T10:00:00Z cves=[CVE-2021-44228]"},
		{"too many digits", "p (1) s; urgency=high\n  CVE-2021-12345678901234567890\n", "1", "", "found=true dist=s date=- cves=[]"},
		{"empty", "", "1", "", "found=false dist= date=- cves=[]"},
	}
	for _, tt := range tests {
		info, err := parseChangelog(strings.NewReader(tt.text), tt.version, tt.previous)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		if got := describeChangelog(info); got != tt.want {
			t.Errorf("%s:\ngot  %q\nwant %q", tt.name, got, tt.want)
		}
	}
}

func TestParseChangelogLongLine(t *testing.T) {
	text := "p (1) s; urgency=high\n  * CVE-2020-0001\n" + strings.Repeat("x", maxChangelogLine+1) + "\n"
	info, err := parseChangelog(strings.NewReader(text), "1", "")
	if err == nil || !info.Found || fmt.Sprint(info.CVEs) != "[CVE-2020-0001]" {
		t.Errorf("got %q, %v; want what came before the long line and an error", describeChangelog(info), err)
	}
}

func TestChangelogCache(t *testing.T) {
	root := t.TempDir()
	// libexpat1-dev has no doc folder of its own: the source's (expat) is used.
	pkgdbtest.CopyFile(t, docRoot+"/libexpat1/changelog.Debian.gz", filepath.Join(root, DocPath, "expat", "changelog.Debian.gz"))
	var c ChangelogCache
	info, path, ok, err := c.Lookup(root, "libexpat1-dev", "expat", "2.5.0-1+deb12u1", "")
	if err != nil || !ok || filepath.Base(filepath.Dir(path)) != "expat" {
		t.Fatalf("got %q, %v, %v", path, ok, err)
	}
	if got, want := fmt.Sprint(info.CVEs), "[CVE-2024-45490 CVE-2024-45491 CVE-2024-45492]"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// A plain changelog.Debian in the package's own folder comes first.
	plain := filepath.Join(root, DocPath, "libexpat1-dev", "changelog.Debian")
	if err := os.MkdirAll(filepath.Dir(plain), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(plain, []byte("expat (2.5.0-1+deb12u1) bookworm-security; urgency=high\n  * CVE-2099-0001\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	info, _, _, _ = c.Lookup(root, "libexpat1-dev", "expat", "2.5.0-1+deb12u1", "")
	if got, want := fmt.Sprint(info.CVEs), "[CVE-2099-0001]"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// Cached by size and mtime: a rewrite is seen.
	if err := os.WriteFile(plain, []byte("expat (2.5.0-1+deb12u1) bookworm-security; urgency=high\n  * CVE-2099-0002, CVE-2099-0001\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(plain, later, later); err != nil {
		t.Fatal(err)
	}
	info, _, _, _ = c.Lookup(root, "libexpat1-dev", "expat", "2.5.0-1+deb12u1", "")
	if got, want := fmt.Sprint(info.CVEs), "[CVE-2099-0001 CVE-2099-0002]"; got != want {
		t.Errorf("after rewrite: got %q, want %q", got, want)
	}
	// No changelog anywhere; path elements are not followed.
	for _, name := range []string{"nothing", "..", "a/b"} {
		if _, _, ok, _ := c.Lookup(root, name, name, "1", ""); ok {
			t.Errorf("%q: found a changelog", name)
		}
	}
	// A corrupt gzip file is an error, not a panic.
	bad := filepath.Join(root, DocPath, "bad", "changelog.Debian.gz")
	pkgdbtest.CopyFile(t, plain, bad)
	if _, _, ok, err := c.Lookup(root, "bad", "bad", "1", ""); !ok || err == nil {
		t.Errorf("corrupt gzip: got %v, %v", ok, err)
	}
}

// describeTx prints a transaction's dates and change counts.
func describeTx(tx aptTransaction) string {
	counts := map[string]int{}
	for _, c := range tx.Changes {
		counts[c.Action]++
	}
	return fmt.Sprintf("%s..%s %v", tx.Start.Format(time.DateTime), tx.End.Format(time.DateTime), counts)
}

func TestParseHistoryLogFixture(t *testing.T) {
	data, err := os.ReadFile(debianRoot + "/" + AptLogPath + "/history.log")
	if err != nil {
		t.Fatal(err)
	}
	txs := parseHistoryLog(data, time.UTC)
	if len(txs) != 13 {
		t.Fatalf("got %d transactions, want 13", len(txs))
	}
	blocks := map[string]int{}
	changes := map[string]int{}
	automatic := 0
	for _, tx := range txs {
		seen := map[string]bool{}
		for _, c := range tx.Changes {
			changes[c.Action]++
			if !seen[c.Action] {
				blocks[c.Action]++
				seen[c.Action] = true
			}
			if c.Automatic {
				automatic++
			}
		}
	}
	if got, want := fmt.Sprint(blocks, changes, automatic), "map[Install:10 Purge:1 Upgrade:5] map[Install:676 Purge:16 Upgrade:40] 587"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := txs[0].Start.Format(time.RFC3339)+" "+txs[12].Start.Format(time.RFC3339)+" "+txs[12].End.Format(time.RFC3339),
		"2025-06-24T14:36:25Z 2026-11-25T12:32:13Z 2026-11-25T12:32:26Z"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := describeTx(txs[4]), "2026-05-09 07:28:46..2026-05-09 07:28:50 map[Upgrade:1]"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	find := func(action, name string) string {
		for _, tx := range txs {
			for _, c := range tx.Changes {
				if c.Action == action && c.Name == name {
					return fmt.Sprintf("%s:%s (%s, %s) auto=%v %s", c.Name, c.Arch, c.Old, c.New, c.Automatic, tx.when().Format(time.DateTime))
				}
			}
		}
		return ""
	}
	for _, tt := range []struct{ action, name, want string }{
		{"Upgrade", "tzdata", "tzdata:amd64 (2025b-0+deb12u1, 2025b-0+deb12u2) auto=false 2026-05-09 07:28:50"},
		{"Upgrade", "linux-libc-dev", "linux-libc-dev:amd64 (6.1.140-1, 6.1.187-1) auto=false 2026-09-22 04:53:17"},
		{"Upgrade", "openssl", "openssl:amd64 (3.0.16-1~deb12u1, 3.0.19-1~deb12u2) auto=false 2026-05-09 07:29:30"},
		{"Install", "less", "less:amd64 (, 590-2.1~deb12u2) auto=true 2025-06-24 14:37:04"},
		{"Install", "kubectl", "kubectl:amd64 (, 1:528.0.0-0) auto=false 2025-06-24 14:40:22"},
		{"Purge", "libllvm19", "libllvm19:amd64 (1:19.1.7-3~deb12u1, ) auto=false 2026-09-22 04:55:21"},
	} {
		if got := find(tt.action, tt.name); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func TestParseHistoryLogTable(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"pre-multiarch, no End-Date, Requested-By",
			"Start-Date: 2012-01-02  03:04:05\nRequested-By: ann (1000)\nInstall: a (1.0), b (2:1.0-1, automatic)\n",
			"[2012-01-02 03:04:05..0001-01-01 00:00:00 ann (1000) [Install a: (,1.0) Install b: (,2:1.0-1)*]]"},
		{"blocks without a blank line, CRLF",
			"Start-Date: 2020-01-01  00:00:00\r\nRemove: a:i386 (1)\r\nStart-Date: 2020-01-02  00:00:00\r\nDowngrade: b:amd64 (2, 1)\r\nReinstall: c:all (3)\r\nEnd-Date: 2020-01-02  00:00:09\r\n",
			"[2020-01-01 00:00:00..0001-01-01 00:00:00  [Remove a:i386 (1,)] 2020-01-02 00:00:00..2020-01-02 00:00:09  [Downgrade b:amd64 (2,1) Reinstall c:all (,3)]]"},
		{"junk entries skipped",
			"Start-Date: bad\nInstall: (1), x y (2), z (automatic), w (1, , automatic), v (\nUpgrade: u:amd64 (1, 2\nCommandline: apt: x\nError: Sub-process /usr/bin/dpkg returned an error code (1)\n\n\n",
			"[0001-01-01 00:00:00..0001-01-01 00:00:00  [Install w: (,1)*]]"},
		{"nothing", "\n\nfoo\n: bar\n", "[]"},
	}
	for _, tt := range tests {
		var parts []string
		for _, tx := range parseHistoryLog([]byte(tt.text), time.UTC) {
			var cs []string
			for _, c := range tx.Changes {
				s := fmt.Sprintf("%s %s:%s (%s,%s)", c.Action, c.Name, c.Arch, c.Old, c.New)
				if c.Automatic {
					s += "*"
				}
				cs = append(cs, s)
			}
			parts = append(parts, fmt.Sprintf("%s..%s %s %v", tx.Start.Format(time.DateTime), tx.End.Format(time.DateTime), tx.RequestedBy, cs))
		}
		if got := fmt.Sprint(parts); got != tt.want {
			t.Errorf("%s:\ngot  %q\nwant %q", tt.name, got, tt.want)
		}
	}
}

func TestIndexHistory(t *testing.T) {
	log := "Start-Date: 2024-03-01  10:00:00\nUpgrade: a:amd64 (1, 2)\nEnd-Date: 2024-03-01  10:00:05\n\n" +
		"Start-Date: 2024-01-01  10:00:00\nInstall: a:amd64 (1), b:amd64 (5)\nEnd-Date: 2024-01-01  10:00:05\n\n" +
		"Start-Date: 2024-04-01  10:00:00\nReinstall: a:amd64 (2)\nDowngrade: b:amd64 (5, 4)\n\n" +
		"Start-Date: 2024-05-01  10:00:00\nPurge: b:amd64 (4)\nEnd-Date: 2024-05-01  10:00:01\n\n" +
		"Start-Date: 2024-06-01  10:00:00\nInstall: b:amd64 (4)\nEnd-Date: 2024-06-01  10:00:01\n"
	idx := indexHistory(parseHistoryLog([]byte(log), time.UTC))
	for _, tt := range []struct{ name, version, want string }{
		{"a", "2", "2024-04-01 10:00:00 from 1"}, // reinstall keeps the upgrade's previous version
		{"a", "1", "2024-01-01 10:00:05 from "},
		{"b", "5", "2024-01-01 10:00:05 from "},
		{"b", "4", "2024-06-01 10:00:01 from "}, // purged, then installed afresh
		{"c", "1", "0001-01-01 00:00:00 from "},
	} {
		ev := idx[HistoryKey(tt.name, tt.version)]
		if got := ev.At.Format(time.DateTime) + " from " + ev.Previous; got != tt.want {
			t.Errorf("%s %s: got %q, want %q", tt.name, tt.version, got, tt.want)
		}
	}
}

func TestReadHistoryRotated(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		var buf bytes.Buffer
		if strings.HasSuffix(name, ".gz") {
			gz := gzip.NewWriter(&buf)
			gz.Write([]byte(text))
			gz.Close()
		} else {
			buf.WriteString(text)
		}
		if err := os.WriteFile(filepath.Join(dir, name), buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("history.log", "Start-Date: 2024-03-01  10:00:00\nUpgrade: a:amd64 (2, 3)\nEnd-Date: 2024-03-01  10:00:01\n")
	write("history.log.1", "Start-Date: 2024-02-01  10:00:00\nUpgrade: a:amd64 (1, 2)\nEnd-Date: 2024-02-01  10:00:01\n")
	write("history.log.2.gz", "Start-Date: 2024-01-01  10:00:00\nInstall: a:amd64 (1), b:amd64 (9)\nEnd-Date: 2024-01-01  10:00:01\n")
	if err := os.WriteFile(filepath.Join(dir, "history.log.10.gz"), []byte("not gzip"), 0o644); err != nil {
		t.Fatal(err)
	}
	write("history.log.x.gz", "ignored")
	write("term.log", "ignored")
	names, _ := historyFiles(dir)
	if got, want := fmt.Sprint(names), "[history.log history.log.1 history.log.2.gz history.log.10.gz]"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	idx, notes := readHistory(dir, time.UTC)
	var got []string
	for _, k := range []string{HistoryKey("a", "3"), HistoryKey("a", "2"), HistoryKey("b", "9")} {
		got = append(got, idx[k].At.Format(time.DateTime)+" "+idx[k].Previous)
	}
	if want := "[2024-03-01 10:00:01 2 2024-02-01 10:00:01 1 2024-01-01 10:00:01 ]"; fmt.Sprint(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "history.log.10.gz") {
		t.Errorf("got notes %q, want one about history.log.10.gz", notes)
	}
	_, notes = readHistory(t.TempDir(), time.UTC)
	if len(notes) != 1 || !strings.Contains(notes[0], "no apt history log") {
		t.Errorf("got notes %q", notes)
	}
}

func TestRootLocation(t *testing.T) {
	root := t.TempDir()
	if rootLocation(root) != time.Local {
		t.Errorf("no /etc/localtime: want the agent's zone")
	}
	// A zone file inside root, reached through an absolute symlink as on
	// Debian (/etc/localtime -> /usr/share/zoneinfo/…).
	tz := filepath.Join(root, "usr/share/zoneinfo/Test")
	if err := os.MkdirAll(filepath.Dir(tz), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tz, fixedZoneTZif(3600), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/share/zoneinfo/Test", filepath.Join(root, "etc/localtime")); err != nil {
		t.Skip("no symlinks:", err)
	}
	at := time.Date(2024, 1, 1, 12, 0, 0, 0, rootLocation(root))
	if got, want := at.Format(time.RFC3339), "2024-01-01T12:00:00+01:00"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// fixedZoneTZif builds a minimal TZif (version 1) file for a zone with one
// fixed offset and no transitions.
func fixedZoneTZif(offset int32) []byte {
	var b bytes.Buffer
	b.WriteString("TZif")
	b.Write(make([]byte, 16)) // version 1 and reserved bytes
	// isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
	for _, n := range []uint32{0, 0, 0, 0, 1, 4} {
		b.Write([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	}
	b.Write([]byte{byte(offset >> 24), byte(offset >> 16), byte(offset >> 8), byte(offset), 0, 0})
	b.WriteString("TST\x00")
	return b.Bytes()
}
