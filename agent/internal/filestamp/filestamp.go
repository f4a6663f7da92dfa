// Package filestamp describes files and folders by name, size and mtime,
// so a cache can tell cheaply whether what it parsed has changed.
package filestamp

import (
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// Dir describes a folder's entries by name, size and mtime, or is
// "-" when the folder cannot be read.
func Dir(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "-;"
	}
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.Name())
		if info, err := e.Info(); err == nil {
			stamp(&b, info)
		}
	}
	return b.String()
}

// File writes a file's size and mtime to b, or "-" when it is absent.
func File(b *strings.Builder, path string) {
	info, err := os.Stat(path)
	if err != nil {
		b.WriteString("-;")
		return
	}
	stamp(b, info)
}

func stamp(b *strings.Builder, info fs.FileInfo) {
	b.WriteByte('=')
	b.WriteString(strconv.FormatInt(info.Size(), 10))
	b.WriteByte('@')
	b.WriteString(strconv.FormatInt(info.ModTime().UnixNano(), 10))
	b.WriteByte(';')
}
