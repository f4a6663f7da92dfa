package pkgdb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"
)

// The macOS and Windows readers are tested on fixture files written by hand
// (testdata/macos, testdata/windows; the binary Info.plist was encoded with
// Python's plistlib): no macOS or Windows machine exists here.

func TestParsePlistXML(t *testing.T) {
	data, err := os.ReadFile("testdata/macos/Applications/Safari.app/Contents/Info.plist")
	if err != nil {
		t.Fatal(err)
	}
	v, err := parsePlist(data)
	if err != nil {
		t.Fatal(err)
	}
	d := v.(map[string]any)
	docTypes := d["CFBundleDocumentTypes"].([]any)[0].(map[string]any)
	checks := []struct {
		key  string
		got  any
		want any
	}{
		{"CFBundleIdentifier", d["CFBundleIdentifier"], "com.apple.Safari"},
		{"NSSupportsAutomaticTermination", d["NSSupportsAutomaticTermination"], int64(1)},
		{"ScaleFactor", d["ScaleFactor"], 2.5},
		{"LSRequiresNativeExecution", d["LSRequiresNativeExecution"], false},
		{"LSIsAppleDefaultForType", docTypes["LSIsAppleDefaultForType"], true},
		{"extensions", fmt.Sprint(docTypes["CFBundleTypeExtensions"]), "[html htm]"},
		{"Signature", string(d["Signature"].([]byte)), "signature"},
		{"BuildDate", d["BuildDate"], time.Date(2024, 5, 13, 10, 20, 30, 0, time.UTC)},
		{"copyright", d["NSHumanReadableCopyright"], "Copyright © 2003-2024 Apple Inc."},
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s: got %#v, want %#v", c.key, c.got, c.want)
		}
	}
}

func TestParsePlistBinary(t *testing.T) {
	data, err := os.ReadFile("testdata/macos/Applications/Utilities/Zürich Tool.app/Contents/Info.plist")
	if err != nil {
		t.Fatal(err)
	}
	v, err := parsePlist(data)
	if err != nil {
		t.Fatal(err)
	}
	d := v.(map[string]any)
	got := fmt.Sprintf("%v|%v|%v|%v|%v|%v|%v|%v|%d", d["CFBundleDisplayName"], d["LSUIElement"], d["Count"], d["Negative"], d["Ratio"],
		d["Built"].(time.Time).UTC().Format(time.RFC3339), d["Blob"], d["Nested"], len(d["Long"].(string)))
	want := "Zürich Tool ✓|true|300000|-5|0.25|2024-01-02T03:04:05Z|[0 1 2]|map[Archs:[arm64 x86_64] Empty:[]]|40"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestParsePlistBad(t *testing.T) {
	for _, in := range []string{"", "<x/>", "<plist><dict><key>x</key>", "<plist><dict><key>x</key></dict></plist>",
		"<plist><integer>z</integer></plist>", "bplist00", "bplist00" + string(make([]byte, 40))} {
		if _, err := parsePlist([]byte(in)); err == nil {
			t.Errorf("parsePlist(%q): no error", in)
		}
	}
}

func TestReadMacPackages(t *testing.T) {
	pkgs, found := readMacPackages("testdata/macos")
	if !found {
		t.Fatal("nothing found")
	}
	sortPackages(pkgs)
	var got []string
	for _, p := range pkgs {
		got = append(got, fmt.Sprintf("%s %s %s %s %s %s %v", p.Manager, p.Name, p.Version, p.Arch, p.Source, p.Vendor, !p.InstallTime.IsZero()))
	}
	// Broken.app's Info.plist does not parse: it is left out.
	exp := fmt.Sprint([]string{
		"app Safari 17.5  com.apple.Safari  true",
		"app Zürich Tool ✓ 2.1.0  ch.example.zuerich  true",
		"homebrew-cask firefox 127.0.2  firefox  true",
		"homebrew jq 1.7.1 arm64 jq homebrew/core true",
		"homebrew openssl@3 3.3.0 arm64 openssl@3 homebrew/core true",
		"homebrew openssl@3 3.3.1 arm64 openssl@3 homebrew/core true",
	})
	if fmt.Sprint(got) != exp {
		t.Errorf("got  %q\nwant %q", got, exp)
	}
	for _, p := range pkgs {
		if p.Name == "jq" && !p.InstallTime.Equal(time.Unix(1718000000, 0)) {
			t.Errorf("jq install time %v, want the receipt's", p.InstallTime)
		}
	}
	// The cache signature changes when software is added.
	root := t.TempDir()
	before := macSignature(root)
	if err := os.MkdirAll(root+"/opt/homebrew/Cellar/jq/1.7.1", 0o755); err != nil {
		t.Fatal(err)
	}
	if macSignature(root) == before {
		t.Error("macSignature did not change when a formula was installed")
	}
	if _, found := readMacPackages(t.TempDir()); found {
		t.Error("found macOS software in an empty tree")
	}
}

func TestInstallHistoryAndSoftwareUpdate(t *testing.T) {
	history, err := ReadInstallHistory("testdata/macos")
	if err != nil {
		t.Fatal(err)
	}
	if len(history) != 4 || history[1].Name != "XProtectPlistConfigData" || !history[1].Security || history[2].Security ||
		!history[0].Date.Equal(time.Date(2024, 5, 14, 9, 0, 0, 0, time.UTC)) {
		t.Fatalf("got %+v", history)
	}
	text, err := os.ReadFile("testdata/macos/softwareupdate-list.txt")
	if err != nil {
		t.Fatal(err)
	}
	pending := ParseSoftwareUpdateList(string(text))
	if got := fmt.Sprint(pending); got != "[{macOS Sonoma 14.6-23G80 macOS Sonoma 14.6 14.6 true} {Safari17.6SonomaAuto-17.6 Safari 17.6 true}]" {
		t.Errorf("softwareupdate: got %s", got)
	}
	if got := ParseSoftwareUpdateList("Software Update Tool\n\nNo new software available.\n"); len(got) != 0 {
		t.Errorf("no updates: got %v", got)
	}
	_, err = ReadInstallHistory(t.TempDir())
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "InstallHistory.plist") {
		t.Errorf("no history: got %v, want a not-exist error naming InstallHistory.plist", err)
	}
}

func TestUninstallPackage(t *testing.T) {
	tests := []struct {
		vals map[string]any
		want string
	}{
		{map[string]any{"DisplayName": "7-Zip 23.01 (x64)", "DisplayVersion": "23.01", "Publisher": "Igor Pavlov", "InstallDate": "20240115"},
			"7-Zip 23.01 (x64)|23.01|x64|{K}|Igor Pavlov|2024-01-15|windows-uninstall"},
		{map[string]any{"DisplayName": "Microsoft Visual C++ 2022 X64 Minimum Runtime", "DisplayVersion": "14.38.33130", "WindowsInstaller": uint64(1)},
			"Microsoft Visual C++ 2022 X64 Minimum Runtime|14.38.33130|x64|{K}||0001-01-01|msi"},
		{map[string]any{"DisplayName": "hidden", "SystemComponent": uint64(1)}, "skip"},
		{map[string]any{"DisplayName": "Update for X", "ParentKeyName": "X"}, "skip"},
		{map[string]any{"DisplayName": "Security Update for Y", "ReleaseType": "Security Update"}, "skip"},
		{map[string]any{"DisplayVersion": "1.0"}, "skip"},
	}
	read := map[string]bool{}
	for _, v := range append(winUninstallValues.strings, winUninstallValues.dwords...) {
		read[v] = true
	}
	for _, tt := range tests {
		for k := range tt.vals {
			if !read[k] {
				t.Errorf("the registry reader never reads %s (under %s)", k, winUninstallKey)
			}
		}
		p, ok := uninstallPackage("{K}", tt.vals, "x64")
		got := "skip"
		if ok {
			got = fmt.Sprintf("%s|%s|%s|%s|%s|%s|%s", p.Name, p.Version, p.Arch, p.Source, p.Vendor, p.InstallTime.Format(time.DateOnly), p.Manager)
		}
		if got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func TestWindowsPatchesParsers(t *testing.T) {
	read := func(name string) []byte {
		data, err := os.ReadFile("testdata/windows/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	hotfixes, err := DecodePSList[WinHotfix](read("hotfixes.json"))
	if err != nil || len(hotfixes) != 3 {
		t.Fatalf("got %v %v", hotfixes, err)
	}
	one, err := DecodePSList[WinHotfix](read("hotfix-one.json"))
	if err != nil || len(one) != 1 || one[0].HotFixID != "KB5034439" {
		t.Fatalf("a single object (with a BOM): got %v %v", one, err)
	}
	if none, err := DecodePSList[WinHotfix]([]byte("\r\n")); err != nil || len(none) != 0 {
		t.Fatalf("no output: got %v %v", none, err)
	}
	pending, err := DecodePSList[WinUpdate](read("pending.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 3 {
		t.Errorf("pending: got %+v", pending)
	}
}

// buildBplist writes a binary plist from encoded objects (object 0 on top),
// with one-byte object references.
func buildBplist(objects [][]byte) []byte {
	out := []byte("bplist00")
	var offsets []uint32
	for _, o := range objects {
		offsets = append(offsets, uint32(len(out)))
		out = append(out, o...)
	}
	table := len(out)
	for _, off := range offsets {
		out = binary.BigEndian.AppendUint32(out, off)
	}
	trailer := make([]byte, 32)
	trailer[6], trailer[7] = 4, 1
	binary.BigEndian.PutUint64(trailer[8:], uint64(len(objects)))
	binary.BigEndian.PutUint64(trailer[24:], uint64(table))
	return append(out, trailer...)
}

// bplistArray encodes an array of n one-byte references to ref.
func bplistArray(n int, ref byte) []byte {
	o := []byte{0xAF, 0x11, byte(n >> 8), byte(n)}
	for range n {
		o = append(o, ref)
	}
	return o
}

func TestParsePlistHostileBinary(t *testing.T) {
	// An array that contains itself: a cycle, refused at once.
	if _, err := parsePlist(buildBplist([][]byte{bplistArray(1000, 0)})); err == nil || !strings.Contains(err.Error(), "contains itself") {
		t.Errorf("self-containing array: %v", err)
	}
	// Ten levels of 200 references each to the next level: 200^10 objects
	// if expanded; a budget on objects and references read stops it.
	var objects [][]byte
	for i := range 10 {
		objects = append(objects, bplistArray(200, byte(i+1)))
	}
	objects = append(objects, []byte{0x10, 7})
	if _, err := parsePlist(buildBplist(objects)); err == nil || !strings.Contains(err.Error(), "too many objects") {
		t.Errorf("exponential sharing: %v", err)
	}
	// Sharing within the budget is fine: two levels of 200.
	v, err := parsePlist(buildBplist([][]byte{bplistArray(200, 1), bplistArray(200, 2), {0x10, 7}}))
	if err != nil {
		t.Fatal(err)
	}
	if a := v.([]any); len(a) != 200 || len(a[199].([]any)) != 200 || a[199].([]any)[0] != int64(7) {
		t.Errorf("shared arrays decoded as %v", v)
	}
}
