package pkgdb

import "strings"

// MacUpdate is one entry of `softwareupdate --list`.
type MacUpdate struct {
	Label, Title, Version string
	Recommended           bool
}

// ParseSoftwareUpdateList reads `softwareupdate --list` output:
//
//   - Label: macOS Sonoma 14.6-23G80
//     Title: macOS Sonoma 14.6, Version: 14.6, Size: 1234567K, Recommended: YES, Action: restart,
func ParseSoftwareUpdateList(text string) []MacUpdate {
	out := []MacUpdate{}
	for _, line := range strings.Split(text, "\n") {
		t := strings.TrimSpace(line)
		if label, ok := strings.CutPrefix(t, "* Label:"); ok {
			out = append(out, MacUpdate{Label: strings.TrimSpace(label)})
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
