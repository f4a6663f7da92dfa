package functions

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/pkgdb"
	"github.com/commandcontrol/commandcontrol/fleet"
)

// platform answers installed-sec-patches where the package list came from
// the platform rather than a Linux package manager. No Windows or macOS
// machine exists where this is developed: the parsers are tested on output
// written by hand to the tools' documented formats, and the runs are
// compile-checked only.
func (f *secPatches) platform(ctx context.Context, manager string, filter nameFilter) (any, error) {
	switch manager {
	case "windows":
		return f.windowsPatches(ctx, filter)
	case "macos":
		return f.macPatches(ctx, filter)
	}
	return nil, errUnavailable("installed-sec-patches cannot tell security updates of %s packages", manager)
}

// PowerShell scripts: installed hotfixes (what Get-HotFix reads from
// Win32_QuickFixEngineering) and pending software updates from the Windows
// Update agent's offline search (no download, bounded in time).
const (
	psHotfixes = `Get-HotFix | ForEach-Object { [pscustomobject]@{HotFixID=$_.HotFixID; Description=$_.Description; ` +
		`InstalledOn=$(if ($_.InstalledOn) { $_.InstalledOn.ToString('yyyy-MM-dd') } else { '' })} } | ConvertTo-Json -Compress`
	psPending = `$s = (New-Object -ComObject Microsoft.Update.Session).CreateUpdateSearcher(); $s.Online = $false; ` +
		`$s.Search("IsInstalled=0 and IsHidden=0 and Type='Software'").Updates | ForEach-Object { [pscustomobject]@{Title=$_.Title; ` +
		`KB=($_.KBArticleIDs -join ','); Severity=$_.MsrcSeverity; Categories=(($_.Categories | ForEach-Object { $_.Name }) -join ',')} } | ConvertTo-Json -Compress`
)

// windowsReply builds the reply from hotfixes and pending updates; pending
// keeps security updates (a Microsoft severity or the "Security Updates"
// category).
func windowsReply(hotfixes []pkgdb.WinHotfix, pending []pkgdb.WinUpdate, filter nameFilter) *SecPatchesReply {
	r := &SecPatchesReply{Source: "windows-update", Pending: []PendingPatch{}, Installed: []InstalledPatch{}}
	for _, h := range hotfixes {
		if !filter.match(h.HotFixID) {
			continue
		}
		ip := InstalledPatch{Name: h.HotFixID, Source: h.Description, Advisory: h.HotFixID}
		ip.InstalledOn, _ = time.Parse("2006-01-02", h.InstalledOn)
		r.Installed = append(r.Installed, ip)
	}
	other := 0
	for _, u := range pending {
		if u.Severity == "" && !strings.Contains(u.Categories, "Security") {
			other++
			continue
		}
		if !filter.match(u.Title) {
			continue
		}
		kb := ""
		if u.KB != "" {
			kb = "KB" + strings.Split(u.KB, ",")[0]
		}
		r.Pending = append(r.Pending, PendingPatch{Name: u.Title, Available: u.Title, Source: u.Categories, Advisory: kb, Severity: u.Severity})
	}
	r.InstalledCount, r.PendingCount = len(r.Installed), len(r.Pending)
	r.Notes = append(r.Notes, "installed lists every hotfix Get-HotFix reports (its description tells security updates apart)",
		fmt.Sprintf("pending comes from Windows Update's last scan (offline search); %d non-security updates left out", other))
	return r
}

// windowsPatches runs PowerShell for hotfixes and pending updates.
func (f *secPatches) windowsPatches(ctx context.Context, filter nameFilter) (any, error) {
	ps, err := f.lookPath("powershell.exe")
	if err != nil {
		return nil, errUnavailable("PowerShell is not on PATH; installed-sec-patches needs it to list hotfixes and pending updates")
	}
	type answer struct {
		hotfixes []pkgdb.WinHotfix
		pending  []pkgdb.WinUpdate
	}
	v, err := f.tools.get("windows"+f.db.Signature(), func() (any, error) {
		out, err := runTool(ctx, ps, "-NoProfile", "-NonInteractive", "-Command", psHotfixes)
		if fleet.CodeOf(err) == fleet.CodeTimeout {
			return nil, err
		}
		if err != nil {
			return nil, errUnavailable("cannot list hotfixes: %v", err)
		}
		a := &answer{}
		if a.hotfixes, err = pkgdb.DecodePSList[pkgdb.WinHotfix](out); err != nil {
			return nil, fmt.Errorf("cannot read Get-HotFix output: %w", err)
		}
		out, err = runTool(ctx, ps, "-NoProfile", "-NonInteractive", "-Command", psPending)
		if err == nil {
			a.pending, err = pkgdb.DecodePSList[pkgdb.WinUpdate](out)
		}
		if err != nil {
			return nil, errUnavailable("cannot list pending updates from Windows Update: %v", err)
		}
		return a, nil
	})
	if err != nil {
		return nil, err
	}
	a := v.(*answer)
	return windowsReply(a.hotfixes, a.pending, filter), nil
}

// macReply joins the install history with pending updates. Installed
// keeps Apple's updates and security content; pending lists every update
// softwareupdate offers (Apple ships security fixes inside them).
func macReply(history []pkgdb.MacInstall, pending []pkgdb.MacUpdate, filter nameFilter) *SecPatchesReply {
	r := &SecPatchesReply{Source: "softwareupdate", Pending: []PendingPatch{}, Installed: []InstalledPatch{}}
	other := 0
	for _, h := range history {
		if !h.Security && h.ProcessName != "softwareupdated" {
			other++
			continue
		}
		if filter.match(h.Name) {
			r.Installed = append(r.Installed, InstalledPatch{Name: h.Name, Version: h.Version, Source: h.ProcessName, InstalledOn: h.Date.UTC()})
		}
	}
	for _, u := range pending {
		name := u.Title
		if name == "" {
			name = u.Label
		}
		if filter.match(name) {
			r.Pending = append(r.Pending, PendingPatch{Name: name, Available: u.Version, Source: u.Label})
		}
	}
	r.InstalledCount, r.PendingCount = len(r.Installed), len(r.Pending)
	r.Notes = append(r.Notes, fmt.Sprintf("installed is from %s: Apple's updates and security content; %d other installs left out", pkgdb.MacInstallHistoryPath, other),
		"pending is from softwareupdate's last scan (--no-scan)")
	return r
}

// macPatches reads the install history and asks softwareupdate.
func (f *secPatches) macPatches(ctx context.Context, filter nameFilter) (any, error) {
	history, err := pkgdb.ReadInstallHistory(f.root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errUnavailable("no %s: this is not a macOS machine, or it has never installed an update", pkgdb.MacInstallHistoryPath)
	}
	if err != nil {
		return nil, err
	}
	su, err := f.lookPath("softwareupdate")
	if err != nil {
		return nil, errUnavailable("softwareupdate is not on PATH; pending updates are unknown")
	}
	v, err := f.tools.get("macos"+f.db.Signature(), func() (any, error) {
		out, err := runTool(ctx, su, "--list", "--no-scan")
		if fleet.CodeOf(err) == fleet.CodeTimeout {
			return nil, err
		}
		if err != nil {
			return nil, errUnavailable("cannot list pending updates: %v", err)
		}
		return pkgdb.ParseSoftwareUpdateList(string(out)), nil
	})
	if err != nil {
		return nil, err
	}
	return macReply(history, v.([]pkgdb.MacUpdate), filter), nil
}
