package pkgdb

import "testing"

func TestSplitSourceRpm(t *testing.T) {
	tests := []struct{ in, name, version string }{
		{"util-linux-2.32.1-42.el8_8.src.rpm", "util-linux", "2.32.1-42.el8_8"},
		{"hello-0.0.1-rls.src.rpm", "hello", "0.0.1-rls"},
		{"kernel-5.14.0-1.nosrc.rpm", "kernel", "5.14.0-1"},
		{"nodash.src.rpm", "", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		if n, v := SplitSourceRpm(tt.in); n != tt.name || v != tt.version {
			t.Errorf("SplitSourceRpm(%q) = %q, %q; want %q, %q", tt.in, n, v, tt.name, tt.version)
		}
	}
}
