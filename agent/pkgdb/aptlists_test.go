package pkgdb

import (
	"fmt"
	"testing"
	"time"
)

func TestSecurityReleaseDetection(t *testing.T) {
	tests := []struct {
		name string
		r    Release
		want bool
	}{
		{"debian suite", Release{Suite: "oldstable-security", Codename: "bookworm-security"}, true},
		{"debian label", Release{Suite: "stable", Label: "Debian-Security"}, true},
		{"ubuntu", Release{Suite: "jammy-security", Codename: "jammy", Label: "Ubuntu"}, true},
		{"updates", Release{Suite: "jammy-updates", Codename: "jammy"}, false},
		{"main", Release{Suite: "stable", Codename: "bookworm", Label: "Debian"}, false},
	}
	for _, tt := range tests {
		if got := tt.r.isSecurity(); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestPackagesFiles(t *testing.T) {
	names := []string{
		"x_dists_s-security_InRelease",
		"x_dists_s-security_main_binary-amd64_Packages",
		"x_dists_s-security_main_binary-amd64_Packages.lz4",
		"x_dists_s-security_main_binary-all_Packages.gz",
		"x_dists_s-security_main_i18n_Translation-en",
		"x_dists_s-security_main_dep11_Components-amd64.yml.gz",
		"x_dists_s-security-other_main_binary-amd64_Packages",
		"x_dists_s_main_binary-amd64_Packages.lz4",
	}
	got := fmt.Sprint(packagesFiles(names, "x_dists_s-security_"))
	want := "[x_dists_s-security_main_binary-all_Packages.gz x_dists_s-security_main_binary-amd64_Packages]"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParseReleaseClearsigned(t *testing.T) {
	text := "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\nLabel: Debian-Security\nSuite: stable-security\nDate: Sat, 01 Jun 2024 10:00:00 UTC\nSHA256:\n abc 1 main/binary-amd64/Packages\n-----BEGIN PGP SIGNATURE-----\n\nxyz\n-----END PGP SIGNATURE-----\n"
	r := parseRelease([]byte(text))
	got := fmt.Sprintf("%s|%s|%s", r.Suite, r.Label, r.Date.Format(time.RFC3339))
	want := "stable-security|Debian-Security|2024-06-01T10:00:00Z"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
