package pkgdb

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/internal/filestamp"
)

// APKIndexDirs hold the repository indexes apk downloaded
// (APKINDEX.<hash>.tar.gz), relative to the root.
var APKIndexDirs = []string{"var/cache/apk", "etc/apk/cache"}

// maxAPKINDEX bounds the uncompressed APKINDEX member read from an index.
const maxAPKINDEX = 64 << 20

// APKIndex is the newest version of each package name in the indexes.
type APKIndex struct {
	Files  []APKIndexFile
	Newest map[string]Package
}

// APKIndexFile is one APKINDEX.*.tar.gz read, with its mtime.
type APKIndexFile struct {
	Path string
	Date time.Time
}

// APKIndexCache keeps the parsed indexes while the folders are unchanged.
type APKIndexCache struct {
	mu  sync.Mutex
	sig string
	idx *APKIndex
}

// Load returns the indexes under root (see [APKIndexDirs]), reading them
// again only when a file in their folders changed. With no readable index
// it returns an index without files and notes saying what was skipped;
// that is not kept, so the next call looks again.
func (c *APKIndexCache) Load(root string) (*APKIndex, []string) {
	var sig strings.Builder
	for _, dir := range APKIndexDirs {
		sig.WriteString(filestamp.Dir(filepath.Join(root, dir)))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idx == nil || c.sig != sig.String() {
		idx, notes := loadAPKIndexes(root)
		if len(idx.Files) == 0 {
			return idx, notes
		}
		c.idx, c.sig = idx, sig.String()
	}
	return c.idx, nil
}

// readAPKINDEX returns the APKINDEX member of an APKINDEX.tar.gz: a gzip
// stream of two concatenated tar segments (the signature, then DESCRIPTION
// and APKINDEX), which reads as one tar.
func readAPKINDEX(r io.Reader) ([]byte, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, errors.New("no APKINDEX member")
			}
			return nil, err
		}
		if h.Name == "APKINDEX" {
			if h.Size > maxAPKINDEX {
				return nil, fmt.Errorf("APKINDEX member is %d bytes", h.Size)
			}
			return io.ReadAll(io.LimitReader(tr, maxAPKINDEX))
		}
	}
}

// loadAPKIndexes reads every APKINDEX.*.tar.gz under root.
func loadAPKIndexes(root string) (*APKIndex, []string) {
	idx := &APKIndex{Newest: map[string]Package{}}
	var notes []string
	seen := map[string]bool{}
	for _, dir := range APKIndexDirs {
		matches, _ := filepath.Glob(filepath.Join(root, dir, "APKINDEX.*.tar.gz"))
		for _, path := range matches {
			real, err := filepath.EvalSymlinks(path)
			if err != nil || seen[real] {
				continue // etc/apk/cache is often a link to var/cache/apk
			}
			seen[real] = true
			f, err := os.Open(path)
			if err != nil {
				notes = append(notes, "skipped "+err.Error())
				continue
			}
			data, err := readAPKINDEX(f)
			st, _ := f.Stat()
			f.Close()
			if err != nil {
				notes = append(notes, fmt.Sprintf("skipped %s: %v", path, err))
				continue
			}
			file := APKIndexFile{Path: path}
			if st != nil {
				file.Date = st.ModTime().UTC().Truncate(time.Second)
			}
			idx.Files = append(idx.Files, file)
			for _, p := range parseApkInstalled(data) {
				if old, ok := idx.Newest[p.Name]; !ok || CompareApkVersions(p.Version, old.Version) > 0 {
					idx.Newest[p.Name] = p
				}
			}
		}
	}
	return idx, notes
}

// apkSuffixRank orders apk version suffixes: pre-releases before the
// release (rank 0 is "no suffix"), patches and snapshots after it.
var apkSuffixRank = map[string]int{"alpha": -4, "beta": -3, "pre": -2, "rc": -1, "cvs": 1, "svn": 2, "git": 3, "hg": 4, "p": 5}

// CompareApkVersions compares Alpine versions such as 1.36.0-r9,
// 2.14.0_rc1-r0, 1.2.13_git20230101-r1 and 1.0a: numeric dot-separated
// parts, an optional letter, _suffix[N] parts, then the -rN revision.
func CompareApkVersions(a, b string) int {
	va, vb := parseApkVersion(a), parseApkVersion(b)
	for i := 0; i < len(va.nums) || i < len(vb.nums); i++ {
		if i >= len(va.nums) {
			return -1
		}
		if i >= len(vb.nums) {
			return 1
		}
		if c := cmpInt(va.nums[i], vb.nums[i]); c != 0 {
			return c
		}
	}
	if c := strings.Compare(va.letter, vb.letter); c != 0 {
		return c
	}
	for i := 0; i < len(va.suffixes) || i < len(vb.suffixes); i++ {
		sa, sb := apkSuffix{}, apkSuffix{}
		if i < len(va.suffixes) {
			sa = va.suffixes[i]
		}
		if i < len(vb.suffixes) {
			sb = vb.suffixes[i]
		}
		if c := cmpInt(int64(sa.rank), int64(sb.rank)); c != 0 {
			return c
		}
		if c := cmpInt(sa.n, sb.n); c != 0 {
			return c
		}
	}
	return cmpInt(va.rev, vb.rev)
}

type apkSuffix struct {
	rank int
	n    int64
}

type apkVersion struct {
	nums     []int64
	letter   string
	suffixes []apkSuffix
	rev      int64
}

func parseApkVersion(s string) apkVersion {
	var v apkVersion
	if i := strings.LastIndex(s, "-r"); i >= 0 {
		v.rev, _ = atoi64(s[i+2:])
		s = s[:i]
	}
	s, _, _ = strings.Cut(s, "~") // a trailing commit hash does not order
	main, rest, _ := strings.Cut(s, "_")
	for _, part := range strings.Split(main, ".") {
		digits := strings.TrimRightFunc(part, func(r rune) bool { return r < '0' || r > '9' })
		n, _ := atoi64(digits)
		v.nums = append(v.nums, n)
		if len(digits) < len(part) {
			v.letter = part[len(digits):]
		}
	}
	for rest != "" {
		var suf string
		suf, rest, _ = strings.Cut(rest, "_")
		name := strings.TrimRightFunc(suf, func(r rune) bool { return r >= '0' && r <= '9' })
		n, _ := atoi64(suf[len(name):])
		v.suffixes = append(v.suffixes, apkSuffix{rank: apkSuffixRank[name], n: n})
	}
	return v
}

func atoi64(s string) (int64, bool) {
	var n int64
	if s == "" {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' || n > (1<<62)/10 {
			return n, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
