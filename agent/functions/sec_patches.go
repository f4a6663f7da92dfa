package functions

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/internal/filestamp"
	"github.com/commandcontrol/commandcontrol/agent/pkgdb"
	"github.com/commandcontrol/commandcontrol/fleet"
)

func init() { Register(fleet.FnInstalledSecPatches, newSecPatches) }

// SecPatchesReply answers installed-sec-patches.
//
// When the machine has no dpkg database, or apt has no security index in
// var/lib/apt/lists, the function answers a fleet.CodeUnavailable error
// instead of a reply: an empty "pending" list must only ever mean "nothing
// pending", never "nothing known".
type SecPatchesReply struct {
	Source         string           `json:"source"`
	SecurityIndex  []SecurityIndex  `json:"security_index"`
	Pending        []PendingPatch   `json:"pending"`
	PendingCount   int              `json:"pending_count"`
	Installed      []InstalledPatch `json:"installed"`
	InstalledCount int              `json:"installed_count"`
	Notes          []string         `json:"notes"`
}

// SecurityIndex is one security suite apt has downloaded.
type SecurityIndex struct {
	Suite      string    `json:"suite"`
	Codename   string    `json:"codename,omitempty"`
	Date       time.Time `json:"date,omitzero"`
	ValidUntil time.Time `json:"valid_until,omitzero"`
	File       string    `json:"file"`
	Packages   []string  `json:"packages_files"`
}

// PendingPatch is an installed package for which a security (or, on
// Alpine, any) update is available. On Windows and macOS Name is the
// update's title.
type PendingPatch struct {
	Name      string `json:"name"`
	Arch      string `json:"arch"`
	Installed string `json:"installed"`
	Available string `json:"available"`
	Source    string `json:"source"`
	// Advisory is the dnf/yum advisory id (RHSA-2024:1234, FEDORA-…) or
	// the Windows KB article; Severity its rating where one is given.
	Advisory string `json:"advisory,omitempty"`
	Severity string `json:"severity,omitempty"`
}

// InstalledPatch is an installed security update: a package whose version
// came from the security suite (apt), an installed advisory (dnf/yum), a
// hotfix (Windows) or an install-history entry (macOS).
type InstalledPatch struct {
	Name     string `json:"name"`
	Arch     string `json:"arch"`
	Version  string `json:"version"`
	Source   string `json:"source"`
	Advisory string `json:"advisory,omitempty"`
	Severity string `json:"severity,omitempty"`
	// InstalledOn is when the update was installed. apt: the end of the
	// latest history.log transaction that installed this version, read in
	// the machine's zone (/etc/localtime).
	InstalledOn time.Time `json:"installed_on,omitzero"`
	// PreviousVersion is the version this one replaced (apt history's
	// Upgrade or Downgrade); absent for a fresh install.
	PreviousVersion string `json:"previous_version,omitempty"`
	// CVEs are the CVE ids the package's changelog names in the installed
	// version's entry or, after an upgrade, in every entry newer than
	// PreviousVersion (apt).
	CVEs []string `json:"cves,omitempty"`
	// ChangelogDate is the installed version's changelog entry date, in the
	// zone its maintainer wrote. Present means the entry was read, so a
	// missing CVEs then means the entry names none.
	ChangelogDate time.Time `json:"changelog_date,omitzero"`
}

// compareWithIndex finds, for every installed package that filter matches,
// the highest version of the same name in idx for its arch (or "all"):
// higher than installed means pending; a stanza with exactly the installed
// version means the package came from the security suite.
func compareWithIndex(pkgs []pkgdb.Package, idx pkgdb.SecIndex, filter nameFilter) ([]PendingPatch, []InstalledPatch) {
	pending, installed := []PendingPatch{}, []InstalledPatch{}
	for _, p := range pkgs {
		if !filter.match(p.Name) {
			continue
		}
		var best *pkgdb.SecEntry
		same := false
		for i, e := range idx[p.Name] {
			if e.Arch != p.Arch && e.Arch != "all" && p.Arch != "all" {
				continue
			}
			if best == nil || pkgdb.CompareDebVersions(e.Version, best.Version) > 0 {
				best = &idx[p.Name][i]
			}
			same = same || pkgdb.CompareDebVersions(e.Version, p.Version) == 0
		}
		switch {
		case best == nil:
		case pkgdb.CompareDebVersions(best.Version, p.Version) > 0:
			pending = append(pending, PendingPatch{Name: p.Name, Arch: p.Arch, Installed: p.Version, Available: best.Version, Source: best.Source})
		case same:
			installed = append(installed, InstalledPatch{Name: p.Name, Arch: p.Arch, Version: p.Version, Source: p.Source})
		}
	}
	return pending, installed
}

type secPatches struct {
	root string
	db   *pkgdb.DB
	// lookPath finds dnf, yum, PowerShell and softwareupdate (tests
	// replace it with fakes).
	lookPath func(string) (string, error)
	tools    *toolCache
	now      func() time.Time // Env.Now: expiry of the apt indexes
	apkCache pkgdb.APKIndexCache
	// history and changelogs back the apt installed list's dates and CVEs.
	history    pkgdb.HistoryCache
	changelogs pkgdb.ChangelogCache

	mu       sync.Mutex
	sig      string
	releases []pkgdb.Release
	idx      pkgdb.SecIndex
	notes    []string
}

func newSecPatches(env *Env) (Function, error) {
	return &secPatches{root: env.Root, db: env.packageDB(), lookPath: exec.LookPath,
		tools: &toolCache{ttl: toolCacheTTL, now: env.clock()}, now: env.clock()}, nil
}

func (f *secPatches) Spec() Spec {
	return Spec{
		Name:     fleet.FnInstalledSecPatches,
		Help:     "security updates pending and installed: apt's -security index, dnf/yum advisories, apk upgrades, Windows hotfixes, macOS install history",
		ReadOnly: fleet.ReadOnlyBuiltin(fleet.FnInstalledSecPatches),
		Args:     []Arg{nameArg("")},
	}
}

func (f *secPatches) Call(ctx context.Context, args Args) (any, error) {
	filter, manager, pkgs, err := packagesNamed(f.db, args)
	if err != nil {
		return nil, err
	}
	switch manager {
	case "dpkg":
		return f.apt(pkgs, filter)
	case "rpm":
		return f.rpmAdvisories(ctx, pkgs, filter)
	case "apk":
		return f.apkUpgrades(pkgs, filter)
	}
	return f.platform(ctx, manager, filter)
}

// apt compares dpkg's packages with apt's -security indexes.
func (f *secPatches) apt(pkgs []pkgdb.Package, filter nameFilter) (any, error) {
	releases, idx, notes, err := f.index()
	if err != nil {
		return nil, err
	}
	pending, installed := compareWithIndex(pkgs, idx, filter)
	notes = append(append([]string{}, notes...), f.aptDetails(pkgs, installed)...)
	reply := &SecPatchesReply{
		Source: "apt", Pending: pending, PendingCount: len(pending),
		Installed: installed, InstalledCount: len(installed),
		Notes: notes,
	}
	now := f.now()
	for _, r := range releases {
		reply.SecurityIndex = append(reply.SecurityIndex, SecurityIndex{
			Suite: r.Suite, Codename: r.Codename, Date: r.Date, ValidUntil: r.ValidUntil, File: r.File, Packages: r.Packages})
		if !r.ValidUntil.IsZero() && now.After(r.ValidUntil) {
			reply.Notes = append(reply.Notes, fmt.Sprintf("%s expired on %s: the pending list may be out of date; run apt-get update",
				r.File, r.ValidUntil.Format(time.RFC3339)))
		}
	}
	return reply, nil
}

// index returns the parsed security indexes, reading them again only when a
// file in the lists folder changed.
func (f *secPatches) index() ([]pkgdb.Release, pkgdb.SecIndex, []string, error) {
	lists := filepath.Join(f.root, pkgdb.AptListsPath)
	sig := filestamp.Dir(lists)
	f.mu.Lock()
	defer f.mu.Unlock()
	if sig == f.sig && f.idx != nil {
		return f.releases, f.idx, f.notes, nil
	}
	releases, err := pkgdb.FindSecurityReleases(lists)
	if err != nil {
		return nil, nil, nil, errUnavailable("cannot read apt lists %s: %v; is this a Debian or Ubuntu machine?", lists, err)
	}
	if len(releases) == 0 {
		return nil, nil, nil, errUnavailable("no -security suite in %s; add the security source to apt and run apt-get update", lists)
	}
	idx, notes := pkgdb.SecIndex{}, []string{}
	read := 0
	for _, r := range releases {
		for _, name := range r.Packages {
			data, err := pkgdb.ReadIndex(filepath.Join(lists, name))
			if err != nil {
				notes = append(notes, "skipped "+err.Error())
				continue
			}
			pkgdb.ParsePackagesIndex(data, idx)
			read++
		}
	}
	if read == 0 {
		return nil, nil, nil, errUnavailable("no readable Packages index for the -security suite in %s (%v); run apt-get update", lists, notes)
	}
	f.sig, f.releases, f.idx, f.notes = sig, releases, idx, notes
	return releases, idx, notes, nil
}

// aptDetails adds to each installed security update the date and previous
// version of the apt history transaction that installed it, and the CVE ids
// and date of its changelog entry. It returns notes on what is missing.
// pkgs is sorted by name and arch (see [pkgdb.DB.Load]) and holds every
// package of installed.
func (f *secPatches) aptDetails(pkgs []pkgdb.Package, installed []InstalledPatch) []string {
	if len(installed) == 0 {
		return nil
	}
	hist, histNotes := f.history.Load(f.root)
	notes := slices.Clone(histNotes) // the cache's slice is shared
	noEntry, unreadable := 0, 0
	var firstErr error
	f.changelogs.Refresh(f.root)
	for i := range installed {
		ip := &installed[i]
		j := sort.Search(len(pkgs), func(j int) bool {
			return pkgs[j].Name > ip.Name || (pkgs[j].Name == ip.Name && pkgs[j].Arch >= ip.Arch)
		})
		if j == len(pkgs) || pkgs[j].Name != ip.Name || pkgs[j].Arch != ip.Arch {
			continue
		}
		p := pkgs[j]
		if ev, ok := hist[pkgdb.HistoryKey(p.Name, p.Version)]; ok {
			ip.InstalledOn, ip.PreviousVersion = ev.At, ev.Previous
		}
		// Changelogs carry source versions: a binNMU (1.0-1+b2) is listed
		// under its source version (1.0-1).
		info, _, found, err := f.changelogs.Lookup(f.root, p.Name, p.Source, p.SourceVersion, ip.PreviousVersion)
		switch {
		case err != nil && !info.Found:
			unreadable++
			if firstErr == nil {
				firstErr = err
			}
		case !found || !info.Found:
			noEntry++
		default:
			ip.CVEs, ip.ChangelogDate = slices.Clone(info.CVEs), info.Date
		}
	}
	if noEntry > 0 {
		notes = append(notes, fmt.Sprintf("%d of %d installed security updates have no changelog entry for their version in %s/<package>/changelog.Debian.gz: no cves or changelog_date for them",
			noEntry, len(installed), filepath.Join(f.root, pkgdb.DocPath)))
	}
	if unreadable > 0 {
		notes = append(notes, fmt.Sprintf("%d changelogs could not be read (%v)", unreadable, firstErr))
	}
	return notes
}
