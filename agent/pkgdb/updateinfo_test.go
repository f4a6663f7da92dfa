package pkgdb

import (
	"fmt"
	"os"
	"testing"
)

func TestParseUpdateinfo(t *testing.T) {
	read := func(name string) string {
		data, err := os.ReadFile("testdata/rhel/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	tests := []struct{ file, want string }{
		{"dnf4-available.txt", "[{RHSA-2025:1234 Important openssl-libs 1:3.0.7-28.el9_4 x86_64} {RHSA-2025:1234 Important openssl 1:3.0.7-28.el9_4 x86_64} " +
			"{RHSA-2025:2001 Moderate curl 7.76.1-29.el9_4.1 x86_64} {RHSA-2025:2001 Moderate libcurl 7.76.1-29.el9_4.1 x86_64} " +
			"{RHSA-2025:3003 Low tzdata 2025b-1.el9 noarch} {FEDORA-2025-1a2b3c4d5e  python3-libs 3.12.4-1.fc40 x86_64}]"},
		{"dnf4-installed.txt", "[{RHSA-2024:0001 Critical openssl-libs 1:3.0.7-24.el9 x86_64} {RHSA-2024:0456  bash 5.1.8-9.el9 x86_64}]"},
		{"dnf5-available.txt", "[{FEDORA-2025-0e3c2c3a1b Important curl 8.9.1-3.fc41 x86_64} {FEDORA-2025-77aa11bb22  glibc 2.40-12.fc41 x86_64}]"},
		{"yum-installed.txt", "[{RHSA-2019:2030 Important python 2.7.5-86.el7 x86_64} {RHSA-2020:0374 Moderate kernel 3.10.0-1062.12.1.el7 x86_64}]"},
	}
	for _, tt := range tests {
		if got := fmt.Sprint(ParseUpdateinfo(read(tt.file))); got != tt.want {
			t.Errorf("%s:\ngot  %s\nwant %s", tt.file, got, tt.want)
		}
	}
}

func TestSplitNEVRA(t *testing.T) {
	n, evr, arch, ok := splitNEVRA("openssl-libs-1:3.0.7-27.el9.x86_64")
	if !ok || n != "openssl-libs" || evr != "1:3.0.7-27.el9" || arch != "x86_64" {
		t.Errorf("got %q %q %q %v", n, evr, arch, ok)
	}
	for _, bad := range []string{"noarch", "a.b", "a-b.x86_64", ""} {
		if _, _, _, ok := splitNEVRA(bad); ok {
			t.Errorf("splitNEVRA(%q) accepted", bad)
		}
	}
}
