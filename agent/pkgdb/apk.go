package pkgdb

import "bytes"

// ApkInstalledPath is Alpine's installed database, relative to the root.
const ApkInstalledPath = "lib/apk/db/installed"

// parseApkInstalled returns the packages of an apk installed database:
// blank-line separated records of "X:value" lines, where P is the name, V the
// version, A the arch, o the origin (source) package, and m the maintainer.
// apk records no install time (t is the build time), so none is reported.
func parseApkInstalled(data []byte) []Package {
	var out []Package
	var cur Package
	flush := func() {
		if cur.Name != "" && cur.Version != "" {
			if cur.Source == "" {
				cur.Source = cur.Name
			}
			cur.SourceVersion = cur.Version
			cur.Manager = "apk"
			out = append(out, cur)
		}
		cur = Package{}
	}
	for len(data) > 0 {
		var line []byte
		line, data = nextLine(data)
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 {
			flush()
			continue
		}
		if len(line) < 2 || line[1] != ':' {
			continue
		}
		apkField(&cur, line[0], string(line[2:]))
	}
	flush()
	return out
}

// apkField stores one record line's value in p.
func apkField(p *Package, key byte, v string) {
	switch key {
	case 'P':
		p.Name = v
	case 'V':
		p.Version = v
	case 'A':
		p.Arch = v
	case 'o':
		p.Source = v
	case 'm':
		p.Vendor = v
	}
}
