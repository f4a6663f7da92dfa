package pkgdb

import "strings"

// Advisory is one line of `dnf updateinfo list`: an advisory and one
// package (name, [epoch:]version-release, arch) it covers.
type Advisory struct {
	ID, Severity, Name, EVR, Arch string
}

// ParseUpdateinfo reads the text of `dnf updateinfo list --security`
// (dnf 4: "RHSA-2024:1234 Important/Sec. openssl-libs-1:3.0.7-27.el9.x86_64"),
// of dnf 5 ("FEDORA-2024-ab12 security Moderate curl-8.6.0-7.fc40.x86_64
// 2024-03-10 01:23:45") and of `yum updateinfo list security` (as dnf 4).
// Lines of other shapes (headers, "Last metadata expiration check", other
// advisory types) are skipped.
func ParseUpdateinfo(text string) []Advisory {
	var out []Advisory
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || !looksLikeAdvisory(f[0]) {
			continue
		}
		a := Advisory{ID: f[0]}
		nevra := f[2]
		switch {
		case f[1] == "Sec.":
		case strings.HasSuffix(f[1], "/Sec."):
			a.Severity = strings.TrimSuffix(f[1], "/Sec.")
		case strings.EqualFold(f[1], "security") && len(f) >= 4:
			a.Severity, nevra = f[2], f[3]
		default:
			continue
		}
		if a.Severity == "None" || a.Severity == "Unknown" {
			a.Severity = ""
		}
		var ok bool
		if a.Name, a.EVR, a.Arch, ok = splitNEVRA(nevra); ok {
			out = append(out, a)
		}
	}
	return out
}

// looksLikeAdvisory accepts ids such as RHSA-2024:1234, FEDORA-2024-ab12,
// ALSA-2024:1234, ELSA-2024-1234 and openSUSE-SU-2024:0001-1.
func looksLikeAdvisory(id string) bool {
	return strings.ContainsAny(id, "-:") && strings.ContainsAny(id, "0123456789") && !strings.ContainsAny(id, "/.")
}

// splitNEVRA splits "openssl-libs-1:3.0.7-27.el9.x86_64" into
// "openssl-libs", "1:3.0.7-27.el9" and "x86_64".
func splitNEVRA(s string) (name, evr, arch string, ok bool) {
	dot := strings.LastIndexByte(s, '.')
	if dot <= 0 || dot == len(s)-1 {
		return "", "", "", false
	}
	s, arch = s[:dot], s[dot+1:]
	r := strings.LastIndexByte(s, '-')
	if r <= 0 {
		return "", "", "", false
	}
	v := strings.LastIndexByte(s[:r], '-')
	if v <= 0 || v+1 == r || r == len(s)-1 {
		return "", "", "", false
	}
	return s[:v], s[v+1:], arch, true
}
