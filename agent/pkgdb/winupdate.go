package pkgdb

import (
	"bytes"
	"encoding/json"
)

// WinHotfix is one Get-HotFix entry.
type WinHotfix struct {
	HotFixID    string `json:"HotFixID"`
	Description string `json:"Description"`
	InstalledOn string `json:"InstalledOn"`
}

// WinUpdate is one pending Windows Update entry.
type WinUpdate struct {
	Title      string `json:"Title"`
	KB         string `json:"KB"`
	Severity   string `json:"Severity"`
	Categories string `json:"Categories"`
}

// DecodePSList decodes ConvertTo-Json output, which is an object for one
// item, an array for several and empty for none.
func DecodePSList[T any](out []byte) ([]T, error) {
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
