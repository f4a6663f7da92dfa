package functions

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// toolCacheTTL is how long a tool's answer (dnf advisories, Windows
// hotfixes, macOS updates) is reused while the package database is
// unchanged.
const toolCacheTTL = 10 * time.Minute

// rpmAdvisory is one line of `dnf updateinfo list`: an advisory and one
// package (name, [epoch:]version-release, arch) it covers.
type rpmAdvisory struct {
	ID, Severity, Name, EVR, Arch string
}

// parseUpdateinfo reads the text of `dnf updateinfo list --security`
// (dnf 4: "RHSA-2024:1234 Important/Sec. openssl-libs-1:3.0.7-27.el9.x86_64"),
// of dnf 5 ("FEDORA-2024-ab12 security Moderate curl-8.6.0-7.fc40.x86_64
// 2024-03-10 01:23:45") and of `yum updateinfo list security` (as dnf 4).
// Lines of other shapes (headers, "Last metadata expiration check", other
// advisory types) are skipped.
func parseUpdateinfo(text string) []rpmAdvisory {
	var out []rpmAdvisory
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || !looksLikeAdvisory(f[0]) {
			continue
		}
		a := rpmAdvisory{ID: f[0]}
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

// rpmAdvisories is what dnf or yum said about installed and pending
// security advisories.
type rpmAdvisories struct {
	tool               string
	installed, pending []rpmAdvisory
	notes              []string
}

// dnfTools are tried in order; each has the arguments listing installed
// and pending security advisories from the metadata cache (-C: a call
// never waits for a download).
var dnfTools = []struct {
	name               string
	installed, pending []string
}{
	{"dnf", []string{"updateinfo", "list", "--security", "--installed"}, []string{"updateinfo", "list", "--security", "--available"}},
	{"dnf5", []string{"advisory", "list", "--security", "--installed"}, []string{"advisory", "list", "--security", "--available"}},
	{"yum", []string{"updateinfo", "list", "security", "installed"}, []string{"updateinfo", "list", "security", "updates"}},
}

// queryAdvisories runs dnf (or dnf5, or yum) twice.
func (f *secPatches) queryAdvisories(ctx context.Context) (*rpmAdvisories, error) {
	for _, t := range dnfTools {
		bin, err := f.lookPath(t.name)
		if err != nil {
			continue
		}
		common := []string{bin, "-q", "-C"}
		if root := filepath.Clean(f.root); root != "/" {
			common = append(common, "--installroot="+root)
		}
		pend, err := runTool(ctx, append(append([]string{}, common...), t.pending...)...)
		if err != nil {
			var te *toolError
			var fe *fleet.Error
			if errors.As(err, &fe) {
				return nil, err
			}
			if errors.As(err, &te) && strings.Contains(strings.ToLower(te.stderr), "cache") {
				return nil, errUnavailable("%s has no usable metadata cache (%s); run `%s makecache` so pending advisories are known", t.name, te.stderr, t.name)
			}
			return nil, errUnavailable("cannot list pending security advisories with %s: %v", t.name, err)
		}
		r := &rpmAdvisories{tool: t.name, pending: parseUpdateinfo(string(pend))}
		inst, err := runTool(ctx, append(append([]string{}, common...), t.installed...)...)
		if err != nil {
			r.notes = append(r.notes, "installed advisories unknown: "+err.Error())
		} else {
			r.installed = parseUpdateinfo(string(inst))
		}
		r.notes = append(r.notes, "from "+t.name+"'s metadata cache (-C); run `"+t.name+" makecache` to refresh it")
		return r, nil
	}
	return nil, errUnavailable("this rpm machine has neither dnf nor yum on PATH; installed-sec-patches needs one of them to know security advisories")
}

// rpmAdvisories answers from dnf/yum, cached while the rpm database is
// unchanged (for at most [toolCacheTTL]).
func (f *secPatches) rpmAdvisories(ctx context.Context, pkgs []Package, filter nameFilter) (any, error) {
	v, err := f.tools.get("rpm"+f.db.signature(), func() (any, error) { return f.queryAdvisories(ctx) })
	if err != nil {
		return nil, err
	}
	adv := v.(*rpmAdvisories)
	return rpmReply(adv, pkgs, filter), nil
}

// rpmReply joins advisories with the installed packages.
func rpmReply(adv *rpmAdvisories, pkgs []Package, filter nameFilter) *SecPatchesReply {
	byKey := map[string]Package{}
	for _, p := range pkgs {
		byKey[p.Name+"."+p.Arch] = p
	}
	r := &SecPatchesReply{Source: adv.tool, Pending: []PendingPatch{}, Installed: []InstalledPatch{}, Notes: append([]string{}, adv.notes...)}
	for _, a := range adv.pending {
		if !filter.match(a.Name) {
			continue
		}
		p := byKey[a.Name+"."+a.Arch]
		r.Pending = append(r.Pending, PendingPatch{Name: a.Name, Arch: a.Arch, Installed: p.Version, Available: a.EVR,
			Source: p.Source, Advisory: a.ID, Severity: a.Severity})
	}
	for _, a := range adv.installed {
		if !filter.match(a.Name) {
			continue
		}
		p := byKey[a.Name+"."+a.Arch]
		r.Installed = append(r.Installed, InstalledPatch{Name: a.Name, Arch: a.Arch, Version: a.EVR, Source: p.Source,
			Advisory: a.ID, Severity: a.Severity})
	}
	r.PendingCount, r.InstalledCount = len(r.Pending), len(r.Installed)
	return r
}
