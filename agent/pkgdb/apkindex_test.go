package pkgdb

import "testing"

func TestCompareApkVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.36.1-r2", "1.36.0-r9", 1},
		{"1.2.4-r2", "1.2.4-r0", 1},
		{"1.2.4", "1.2.4-r0", 0},
		{"3.1.4-r1", "3.1.10-r0", -1},
		{"2.14.0_rc1-r0", "2.14.0-r0", -1},
		{"2.14.0_p1-r0", "2.14.0-r0", 1},
		{"1.0_alpha2", "1.0_beta1", -1},
		{"1.2.13_git20230101-r1", "1.2.13-r1", 1},
		{"1.0a", "1.0", 1},
		{"1.0b", "1.0a", 1},
		{"1.0.1", "1.0", 1},
		{"20230506-r0", "20230506-r0", 0},
		{"1.0~abc123", "1.0", 0},
	}
	for _, tt := range tests {
		if got := CompareApkVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareApkVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := CompareApkVersions(tt.b, tt.a); got != -tt.want {
			t.Errorf("CompareApkVersions(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}
