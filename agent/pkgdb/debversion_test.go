package pkgdb

import (
	"os/exec"
	"testing"
)

// versionTests are checked against `dpkg --compare-versions` by
// TestCompareDebVersionsAgainstDpkg where dpkg exists.
var versionTests = []struct {
	a, b string
	want int
}{
	{"1.0", "1.0", 0},
	{"1.0", "1.00", 0},
	{"1.0-1", "1.0-1", 0},
	{"0:1.0", "1.0", 0},
	{"1.0", "1.1", -1},
	{"1.10", "1.9", 1},
	{"1.0~rc1", "1.0", -1},
	{"1.0~rc1", "1.0~rc2", -1},
	{"1.0~~", "1.0~", -1},
	{"1.0~", "1.0", -1},
	{"1.0", "1.0a", -1},
	{"1.0a", "1.0+", -1}, // letters sort before non-letters
	{"1.0+", "1.0.", -1}, // '+' (43) before '.' (46)
	{"1.0-1", "1.0-1+b1", -1},
	{"1:1.0", "2.0", 1},
	{"1:9.2p1-2+deb12u6", "1:9.2p1-2+deb12u9", -1},
	{"3.0.19-1~deb12u2", "3.0.22-1~deb12u2", -1},
	{"1.0.9-2+b6", "1.0.9-2+deb12u1", -1}, // binNMU loses to a security upload
	{"2025b-0+deb12u2", "2026f-0+deb12u1", -1},
	{"20230311+deb12u1", "20250419~deb12u2", -1},
	{"1.6-2.1+deb12u1", "1.6-2.1+deb12u3", -1},
	{"1.2.3-1", "1.2.3", 1},
	{"1.2-3-4", "1.2-3-5", -1}, // revision after the last hyphen
	{"a", "b", -1},
	{"", "0", 0},
	{"1.0-0", "1.0", 0},
	{"2.30-1", "2.3-1", 1},
	{"7.88.1-10+deb12u14", "7.88.1-10+deb12u8", 1},
	{"0.0.1-rls", "0.0.1-rls", 0},
	{"10:1", "9:2", 1},
	{"1.0-1~bpo1", "1.0-1", -1},
}

func TestCompareDebVersions(t *testing.T) {
	for _, tt := range versionTests {
		if got := CompareDebVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("compare(%q, %q): got %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := CompareDebVersions(tt.b, tt.a); got != -tt.want {
			t.Errorf("compare(%q, %q): got %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

func TestCompareDebVersionsAgainstDpkg(t *testing.T) {
	dpkg, err := exec.LookPath("dpkg")
	if err != nil {
		t.Skip("dpkg not installed")
	}
	for _, tt := range versionTests {
		if tt.a == "" || tt.b == "" || tt.a == "a" {
			continue // dpkg refuses versions not starting with a digit
		}
		op := map[int]string{-1: "lt", 0: "eq", 1: "gt"}[tt.want]
		if err := exec.Command(dpkg, "--compare-versions", tt.a, op, tt.b).Run(); err != nil {
			t.Errorf("dpkg says %q %s %q is false", tt.a, op, tt.b)
		}
	}
}

func BenchmarkCompareDebVersions(b *testing.B) {
	for b.Loop() {
		CompareDebVersions("1:9.2p1-2+deb12u6", "1:9.2p1-2+deb12u9")
	}
}
