package functions

import (
	"sort"
	"strings"

	"github.com/commandcontrol/commandcontrol/agent/pkgdb"
)

// apkUpgrades lists installed apk packages for which an index has a newer
// version. Alpine's indexes do not mark security fixes, so every pending
// upgrade is listed, and "installed" stays empty; the reply says so.
func (f *secPatches) apkUpgrades(pkgs []pkgdb.Package, filter nameFilter) (any, error) {
	idx, notes := f.apkCache.Load(f.root)
	if len(idx.Files) == 0 {
		return nil, errUnavailable("no apk index in %s (%s); run apk update so pending upgrades are known",
			strings.Join(pkgdb.APKIndexDirs, " or "), strings.Join(append(notes, "none found"), "; "))
	}
	files := make([]SecurityIndex, 0, len(idx.Files))
	for _, file := range idx.Files {
		files = append(files, SecurityIndex{Suite: "apk", File: file.Path, Date: file.Date})
	}
	r := &SecPatchesReply{Source: "apk", SecurityIndex: files, Pending: []PendingPatch{}, Installed: []InstalledPatch{},
		Notes: []string{"Alpine's APKINDEX does not mark security fixes: pending lists every upgradable package, and installed is not known"}}
	for _, p := range pkgs {
		if !filter.match(p.Name) {
			continue
		}
		if n, ok := idx.Newest[p.Name]; ok && pkgdb.CompareApkVersions(n.Version, p.Version) > 0 {
			r.Pending = append(r.Pending, PendingPatch{Name: p.Name, Arch: p.Arch, Installed: p.Version, Available: n.Version, Source: p.Source})
		}
	}
	sort.Slice(r.Pending, func(i, j int) bool { return r.Pending[i].Name < r.Pending[j].Name })
	r.PendingCount = len(r.Pending)
	return r, nil
}
