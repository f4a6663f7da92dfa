package functions

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

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

// winHotfix is one Get-HotFix entry.
type winHotfix struct {
	HotFixID    string `json:"HotFixID"`
	Description string `json:"Description"`
	InstalledOn string `json:"InstalledOn"`
}

// winUpdate is one pending Windows Update entry.
type winUpdate struct {
	Title      string `json:"Title"`
	KB         string `json:"KB"`
	Severity   string `json:"Severity"`
	Categories string `json:"Categories"`
}

// decodePSList decodes ConvertTo-Json output, which is an object for one
// item, an array for several and empty for none.
func decodePSList[T any](out []byte) ([]T, error) {
	out = bytes.TrimSpace(bytes.TrimPrefix(out, []byte("\xef\xbb\xbf")))
	if len(out) == 0 {
		return nil, nil
	}
	if out[0] == '{' {
		var one T
		if err := json.Unmarshal(out, &one); err != nil {
			return nil, err
		}
		return []T{one}, nil
	}
	var many []T
	err := json.Unmarshal(out, &many)
	return many, err
}

// windowsReply builds the reply from hotfixes and pending updates; pending
// keeps security updates (a Microsoft severity or the "Security Updates"
// category).
func windowsReply(hotfixes []winHotfix, pending []winUpdate, filter nameFilter) *SecPatchesReply {
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
		hotfixes []winHotfix
		pending  []winUpdate
	}
	v, err := f.tools.get("windows"+f.db.signature(), func() (any, error) {
		out, err := runTool(ctx, ps, "-NoProfile", "-NonInteractive", "-Command", psHotfixes)
		if fleet.CodeOf(err) == fleet.CodeTimeout {
			return nil, err
		}
		if err != nil {
			return nil, errUnavailable("cannot list hotfixes: %v", err)
		}
		a := &answer{}
		if a.hotfixes, err = decodePSList[winHotfix](out); err != nil {
			return nil, fmt.Errorf("cannot read Get-HotFix output: %w", err)
		}
		out, err = runTool(ctx, ps, "-NoProfile", "-NonInteractive", "-Command", psPending)
		if err == nil {
			a.pending, err = decodePSList[winUpdate](out)
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

// macUpdate is one entry of `softwareupdate --list`.
type macUpdate struct {
	Label, Title, Version string
	Recommended           bool
}

// parseSoftwareUpdateList reads `softwareupdate --list` output:
//
//   - Label: macOS Sonoma 14.6-23G80
//     Title: macOS Sonoma 14.6, Version: 14.6, Size: 1234567K, Recommended: YES, Action: restart,
func parseSoftwareUpdateList(text string) []macUpdate {
	out := []macUpdate{}
	for _, line := range strings.Split(text, "\n") {
		t := strings.TrimSpace(line)
		if label, ok := strings.CutPrefix(t, "* Label:"); ok {
			out = append(out, macUpdate{Label: strings.TrimSpace(label)})
			continue
		}
		if !strings.HasPrefix(t, "Title:") || len(out) == 0 {
			continue
		}
		u := &out[len(out)-1]
		for _, kv := range strings.Split(t, ",") {
			k, v, _ := strings.Cut(kv, ":")
			switch strings.TrimSpace(k) {
			case "Title":
				u.Title = strings.TrimSpace(v)
			case "Version":
				u.Version = strings.TrimSpace(v)
			case "Recommended":
				u.Recommended = strings.TrimSpace(v) == "YES"
			}
		}
	}
	return out
}

// macReply joins the install history with pending updates. Installed
// keeps Apple's updates and security content; pending lists every update
// softwareupdate offers (Apple ships security fixes inside them).
func macReply(history []MacInstall, pending []macUpdate, filter nameFilter) *SecPatchesReply {
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
	r.Notes = append(r.Notes, fmt.Sprintf("installed is from %s: Apple's updates and security content; %d other installs left out", macInstallHistoryPath, other),
		"pending is from softwareupdate's last scan (--no-scan)")
	return r
}

// macPatches reads the install history and asks softwareupdate.
func (f *secPatches) macPatches(ctx context.Context, filter nameFilter) (any, error) {
	history, err := readInstallHistory(f.root)
	if err != nil {
		return nil, err
	}
	su, err := f.lookPath("softwareupdate")
	if err != nil {
		return nil, errUnavailable("softwareupdate is not on PATH; pending updates are unknown")
	}
	v, err := f.tools.get("macos"+f.db.signature(), func() (any, error) {
		out, err := runTool(ctx, su, "--list", "--no-scan")
		if fleet.CodeOf(err) == fleet.CodeTimeout {
			return nil, err
		}
		if err != nil {
			return nil, errUnavailable("cannot list pending updates: %v", err)
		}
		return parseSoftwareUpdateList(string(out)), nil
	})
	if err != nil {
		return nil, err
	}
	return macReply(history, v.([]macUpdate), filter), nil
}
