package pkgdb

import (
	"strconv"
	"strings"
)

// debVersion is a Debian package version split into its three parts:
// [epoch:]upstream_version[-debian_revision].
type debVersion struct {
	epoch    int
	upstream string
	revision string
}

// parseDebVersion splits v the way dpkg does: the epoch is the number before
// the first colon, the revision what follows the last hyphen. An epoch that
// is not a number is read as 0 (dpkg would refuse such a version; we only
// compare).
func parseDebVersion(v string) debVersion {
	v = strings.TrimSpace(v)
	var dv debVersion
	if e, rest, ok := strings.Cut(v, ":"); ok {
		dv.epoch, _ = strconv.Atoi(e)
		v = rest
	}
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		dv.upstream, dv.revision = v[:i], v[i+1:]
	} else {
		dv.upstream = v
	}
	return dv
}

// CompareDebVersions orders two Debian versions as `dpkg --compare-versions`
// does: negative when a < b, zero when equal, positive when a > b.
func CompareDebVersions(a, b string) int {
	va, vb := parseDebVersion(a), parseDebVersion(b)
	switch {
	case va.epoch < vb.epoch:
		return -1
	case va.epoch > vb.epoch:
		return 1
	}
	if c := verrevcmp(va.upstream, vb.upstream); c != 0 {
		return c
	}
	return verrevcmp(va.revision, vb.revision)
}

// debOrder is the weight of one character in the non-digit parts of a
// version: "~" sorts before everything, even the end of the string; letters
// sort before all other characters.
func debOrder(s string, i int) int {
	if i >= len(s) {
		return 0
	}
	c := s[i]
	switch {
	case isDigit(c):
		return 0
	case isLetter(c):
		return int(c)
	case c == '~':
		return -1
	}
	return int(c) + 256
}

// verrevcmp is dpkg's comparison of an upstream version or a revision:
// alternately a non-digit run (compared char by char with [debOrder]) and a
// digit run (compared numerically, leading zeros ignored).
func verrevcmp(a, b string) int {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		for (i < len(a) && !isDigit(a[i])) || (j < len(b) && !isDigit(b[j])) {
			ac, bc := debOrder(a, i), debOrder(b, j)
			if ac != bc {
				return sign(ac - bc)
			}
			i, j = i+1, j+1
		}
		for i < len(a) && a[i] == '0' {
			i++
		}
		for j < len(b) && b[j] == '0' {
			j++
		}
		firstDiff := 0
		for i < len(a) && j < len(b) && isDigit(a[i]) && isDigit(b[j]) {
			if firstDiff == 0 {
				firstDiff = int(a[i]) - int(b[j])
			}
			i, j = i+1, j+1
		}
		if i < len(a) && isDigit(a[i]) {
			return 1
		}
		if j < len(b) && isDigit(b[j]) {
			return -1
		}
		if firstDiff != 0 {
			return sign(firstDiff)
		}
	}
	return 0
}

func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isLetter(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
