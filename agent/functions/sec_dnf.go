package functions

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/pkgdb"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// toolCacheTTL is how long a tool's answer (dnf advisories, Windows
// hotfixes, macOS updates) is reused while the package database is
// unchanged.
const toolCacheTTL = 10 * time.Minute

// rpmAdvisories is what dnf or yum said about installed and pending
// security advisories.
type rpmAdvisories struct {
	tool               string
	installed, pending []pkgdb.Advisory
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
		r := &rpmAdvisories{tool: t.name, pending: pkgdb.ParseUpdateinfo(string(pend))}
		inst, err := runTool(ctx, append(append([]string{}, common...), t.installed...)...)
		if err != nil {
			r.notes = append(r.notes, "installed advisories unknown: "+err.Error())
		} else {
			r.installed = pkgdb.ParseUpdateinfo(string(inst))
		}
		r.notes = append(r.notes, "from "+t.name+"'s metadata cache (-C); run `"+t.name+" makecache` to refresh it")
		return r, nil
	}
	return nil, errUnavailable("this rpm machine has neither dnf nor yum on PATH; installed-sec-patches needs one of them to know security advisories")
}

// rpmAdvisories answers from dnf/yum, cached while the rpm database is
// unchanged (for at most [toolCacheTTL]).
func (f *secPatches) rpmAdvisories(ctx context.Context, pkgs []pkgdb.Package, filter nameFilter) (any, error) {
	v, err := f.tools.get("rpm"+f.db.Signature(), func() (any, error) { return f.queryAdvisories(ctx) })
	if err != nil {
		return nil, err
	}
	adv := v.(*rpmAdvisories)
	return rpmReply(adv, pkgs, filter), nil
}

// rpmReply joins advisories with the installed packages.
func rpmReply(adv *rpmAdvisories, pkgs []pkgdb.Package, filter nameFilter) *SecPatchesReply {
	byKey := map[string]pkgdb.Package{}
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
