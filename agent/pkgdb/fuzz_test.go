package pkgdb

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func FuzzParseDpkgStatus(f *testing.F) {
	f.Add([]byte("Package: a\nStatus: install ok installed\nVersion: 1:2.3-4\nSource: b (5)\n\n"))
	f.Add([]byte("Package:\n\n\n:\n x\n"))
	if data, err := os.ReadFile(distrolessRoot + "/" + DpkgStatusDPath + "/dash"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, p := range parseDpkgStatus(data) {
			if p.Name == "" || p.Version == "" || p.Source == "" {
				t.Fatalf("incomplete package %+v", p)
			}
		}
		parseDpkgStatusFile(data)
		parseApkInstalled(data)
		ParsePackagesIndex(data, SecIndex{})
		parseRelease(data)
	})
}

func FuzzCompareDebVersions(f *testing.F) {
	for _, tt := range versionTests {
		f.Add(tt.a, tt.b)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ab, ba := CompareDebVersions(a, b), CompareDebVersions(b, a)
		if ab != -ba {
			t.Fatalf("compare(%q,%q)=%d but compare(%q,%q)=%d", a, b, ab, b, a, ba)
		}
		if CompareDebVersions(a, a) != 0 {
			t.Fatalf("compare(%q,%q) != 0", a, a)
		}
	})
}

func FuzzParsePlist(f *testing.F) {
	for _, p := range []string{"testdata/macos/Applications/Safari.app/Contents/Info.plist",
		"testdata/macos/Applications/Utilities/Zürich Tool.app/Contents/Info.plist",
		"testdata/macos/Library/Receipts/InstallHistory.plist"} {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("bplist00\xd1\x01\x02"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = parsePlist(data) // must not panic or hang
	})
}

func FuzzParseUpdateinfo(f *testing.F) {
	f.Add("RHSA-2025:1234 Important/Sec. openssl-libs-1:3.0.7-28.el9_4.x86_64\n")
	f.Add("FEDORA-2025-0e3c2c3a1b security Important curl-8.9.1-3.fc41.x86_64 2025-11-20 01:23:45\n")
	f.Fuzz(func(t *testing.T, text string) {
		for _, a := range ParseUpdateinfo(text) {
			if a.Name == "" || a.Arch == "" {
				t.Fatalf("empty name or arch in %+v", a)
			}
		}
	})
}

func FuzzCompareApkVersions(f *testing.F) {
	f.Add("1.36.1-r2", "1.36.0_rc1-r9")
	f.Add("1.0a_p1_git2~x", "1.0")
	f.Fuzz(func(t *testing.T, a, b string) {
		if CompareApkVersions(a, b) != -CompareApkVersions(b, a) {
			t.Fatalf("not antisymmetric for %q, %q", a, b)
		}
	})
}

func FuzzParseChangelog(f *testing.F) {
	for _, p := range []string{"less", "libexpat1"} {
		if data, err := os.ReadFile(debianRoot + "/" + DocPath + "/" + p + "/changelog.Debian.gz"); err == nil {
			if gz, err := gzip.NewReader(bytes.NewReader(data)); err == nil {
				text, _ := io.ReadAll(gz)
				f.Add(text, "590-2.1~deb12u2", "590-1")
			}
		}
	}
	f.Add([]byte("p (1) s-security; urgency=high\n  * CVE-2024-0001 cve-2024-00002\n -- M <m@x>  Mon, 01 Jan 2024 00:00:00 +0000\n"), "1", "")
	f.Add([]byte("p (2) s; x\np (1:1) s;\n -- >  ,  \n"), "1:1", "0")
	f.Fuzz(func(t *testing.T, text []byte, version, previous string) {
		info, _ := parseChangelog(bytes.NewReader(text), version, previous)
		if !info.Found && (len(info.CVEs) > 0 || !info.Date.IsZero() || info.Distribution != "") {
			t.Fatalf("details without the entry: %+v", info)
		}
		for i, id := range info.CVEs {
			if !strings.HasPrefix(id, "CVE-") || !cveRE.MatchString(id) || (i > 0 && compareCVEs(info.CVEs[i-1], id) >= 0) {
				t.Fatalf("bad or unsorted CVE ids %q", info.CVEs)
			}
		}
	})
}

func FuzzParseHistoryLog(f *testing.F) {
	if data, err := os.ReadFile(debianRoot + "/" + AptLogPath + "/history.log"); err == nil {
		f.Add(data[:min(len(data), 4096)])
	}
	f.Add([]byte("Start-Date: 2024-01-01  10:00:00\nUpgrade: a:amd64 (1, 2), b (3, automatic)\nPurge: c:i386 (1)\nEnd-Date: 2024-01-01  10:00:01\n\n"))
	f.Add([]byte("Install: (, ), x (\nDowngrade: :a ()\r\n\r\nStart-Date: \n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		txs := parseHistoryLog(data, time.UTC)
		for _, tx := range txs {
			for _, c := range tx.Changes {
				if c.Name == "" || !historyActions[c.Action] || (c.Old == "" && c.New == "") {
					t.Fatalf("incomplete change %+v", c)
				}
			}
		}
		indexHistory(txs)
	})
}
