package pkgdb

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// AptListsPath is where apt keeps downloaded indexes, relative to the root.
const AptListsPath = "var/lib/apt/lists"

// maxIndexSize bounds a decompressed Packages index (the Debian main
// archive's is about 50 MB) so a corrupt file cannot exhaust memory.
const maxIndexSize = 512 << 20

// Release is the header of one Release or InRelease file and the
// Packages indexes downloaded with it.
type Release struct {
	File       string // base name of the Release file
	Suite      string
	Codename   string
	Label      string
	Date       time.Time
	ValidUntil time.Time
	Packages   []string // base names of its Packages files
}

// parseRelease reads the fields of a Release file; an InRelease file's
// OpenPGP clear-signing armour is stripped first.
func parseRelease(data []byte) Release {
	data = stripClearsign(data)
	var r Release
	scanStanzas(data, func(s stanza) bool {
		r.Suite, r.Codename, r.Label = s.get("Suite"), s.get("Codename"), s.get("Label")
		r.Date = parseReleaseDate(s.get("Date"))
		r.ValidUntil = parseReleaseDate(s.get("Valid-Until"))
		return false
	})
	return r
}

// stripClearsign returns the signed text of an OpenPGP clear-signed
// message, or data itself when it is not one.
func stripClearsign(data []byte) []byte {
	const begin, sig = "-----BEGIN PGP SIGNED MESSAGE-----", "\n-----BEGIN PGP SIGNATURE-----"
	if !bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte(begin)) {
		return data
	}
	// Armour headers (Hash: …) end at the first blank line.
	_, body, ok := bytes.Cut(data, []byte("\n\n"))
	if !ok {
		_, body, _ = bytes.Cut(data, []byte("\r\n\r\n"))
	}
	if i := bytes.Index(body, []byte(sig)); i >= 0 {
		body = body[:i+1]
	}
	return body
}

// parseReleaseDate reads a Release Date field (RFC 2822, "UTC" or a
// numeric zone); the zero time when it cannot.
func parseReleaseDate(s string) time.Time {
	for _, layout := range []string{time.RFC1123, time.RFC1123Z, "Mon, 2 Jan 2006 15:04:05 MST", "Mon, 2 Jan 2006 15:04:05 -0700"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// isSecurity reports whether the release is a security pocket: a suite or
// codename ending in -security (Debian, Ubuntu), or the Debian-Security label.
func (r Release) isSecurity() bool {
	return strings.HasSuffix(r.Suite, "-security") || strings.HasSuffix(r.Codename, "-security") ||
		strings.EqualFold(r.Label, "Debian-Security")
}

// FindSecurityReleases lists the security releases in an apt lists folder,
// each with its Packages files (one per component and arch, whatever the
// compression).
func FindSecurityReleases(lists string) ([]Release, error) {
	entries, err := os.ReadDir(lists)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	var out []Release
	seen := map[string]bool{}
	for _, name := range names {
		prefix, ok := strings.CutSuffix(name, "InRelease")
		if !ok {
			prefix, ok = strings.CutSuffix(name, "_Release")
			prefix += "_"
		}
		if !ok || len(prefix) < 2 || seen[prefix] {
			continue
		}
		data, err := os.ReadFile(filepath.Join(lists, name))
		if err != nil {
			continue
		}
		r := parseRelease(data)
		if !r.isSecurity() {
			continue
		}
		seen[prefix] = true
		r.File, r.Packages = name, packagesFiles(names, prefix)
		out = append(out, r)
	}
	return out, nil
}

// packagesFiles picks, among names, the binary Packages indexes that belong
// to the release whose files start with prefix. When one index exists in
// several compressions the first in name order is kept.
func packagesFiles(names []string, prefix string) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, prefix)
		if !ok || !strings.Contains(rest, "binary-") {
			continue
		}
		base := n
		if !strings.HasSuffix(base, "_Packages") {
			base = strings.TrimSuffix(n, filepath.Ext(n))
			if !strings.HasSuffix(base, "_Packages") {
				continue
			}
		}
		if seen[base] {
			continue
		}
		seen[base] = true
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ReadIndex reads and decompresses one Packages index by its extension:
// none, .lz4 (what apt stores), .gz, .bz2 or .zst. .xz is not supported.
func ReadIndex(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch ext := filepath.Ext(path); ext {
	case "":
	case ".lz4":
		r = lz4.NewReader(f)
	case ".gz":
		gz, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
		}
		defer gz.Close()
		r = gz
	case ".bz2":
		r = bzip2.NewReader(f)
	case ".zst":
		zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
		}
		defer zr.Close()
		r = zr
	default:
		return nil, fmt.Errorf("%s: %s compression is not supported (lz4, gz, bz2, zst and plain are)", filepath.Base(path), ext)
	}
	data, err := io.ReadAll(io.LimitReader(r, maxIndexSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	if len(data) > maxIndexSize {
		return nil, fmt.Errorf("%s: decompresses to more than %d bytes", filepath.Base(path), maxIndexSize)
	}
	return data, nil
}

// SecEntry is one stanza of a security Packages index.
type SecEntry struct{ Arch, Version, Source string }

// SecIndex maps a binary package name to its stanzas in the security indexes.
type SecIndex map[string][]SecEntry

// ParsePackagesIndex adds the stanzas of an apt Packages index to idx.
func ParsePackagesIndex(data []byte, idx SecIndex) {
	scanStanzas(data, func(s stanza) bool {
		name, ver := s.get("Package"), s.get("Version")
		if name == "" || ver == "" {
			return true
		}
		src, _, _ := strings.Cut(s.get("Source"), " ")
		if src == "" {
			src = name
		}
		idx[name] = append(idx[name], SecEntry{Arch: s.get("Architecture"), Version: ver, Source: src})
		return true
	})
}
