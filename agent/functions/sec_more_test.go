package functions

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions/functionstest"
)

// fakeTools writes shell scripts standing in for dnf (or another tool)
// and returns a lookPath that finds them.
func fakeTools(t *testing.T, scripts map[string]string) func(string) (string, error) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("fake tools are shell scripts")
	}
	dir := t.TempDir()
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return func(name string) (string, error) {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			return "", errors.New("not found")
		}
		return p, nil
	}
}

func TestSecPatchesRpmThroughDnf(t *testing.T) {
	abs, _ := filepath.Abs(pkgdbData + "rhel")
	// The fake dnf answers from the fixtures and records its arguments.
	args := filepath.Join(t.TempDir(), "args")
	lookPath := fakeTools(t, map[string]string{"dnf": fmt.Sprintf(`echo "$@" >> %s
case "$*" in
*--installed*) cat %s/dnf4-installed.txt ;;
*) cat %s/dnf4-available.txt ;;
esac`, args, abs, abs)})
	fn, _ := newSecPatches(&Env{Root: pkgdbData + "rpm-sqlite", Now: fixtureNow})
	f := fn.(*secPatches)
	f.lookPath = lookPath
	res, err := f.Call(t.Context(), Args{})
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*SecPatchesReply)
	// openssl-libs and curl exist in the Mariner fixture, so their
	// installed versions and sources are filled in.
	if r.Source != "dnf" || r.PendingCount != 6 || r.InstalledCount != 2 {
		t.Fatalf("got %+v", r)
	}
	var curl PendingPatch
	for _, p := range r.Pending {
		if p.Name == "curl" {
			curl = p
		}
	}
	if curl.Installed != "7.76.0-6.cm2" || curl.Available != "7.76.1-29.el9_4.1" || curl.Advisory != "RHSA-2025:2001" || curl.Severity != "Moderate" || curl.Source != "curl" {
		t.Errorf("curl: got %+v", curl)
	}
	data, _ := os.ReadFile(args)
	if !strings.Contains(string(data), "-q -C --installroot="+pkgdbData+"rpm-sqlite updateinfo list --security --available") {
		t.Errorf("dnf ran with %q", data)
	}
	// Cached: dnf does not run again while the rpm database is unchanged.
	if _, err := f.Call(t.Context(), Args{"name": "open*"}); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(args); len(again) != len(data) {
		t.Errorf("dnf ran again: %q", again)
	}
}

func TestSecPatchesRpmUnavailable(t *testing.T) {
	fn, _ := newSecPatches(&Env{Root: pkgdbData + "rpm-ndb", Now: fixtureNow})
	f := fn.(*secPatches)
	f.lookPath = fakeTools(t, nil)
	_, err := f.Call(t.Context(), Args{})
	functionstest.WantCode(t, err, 503, "neither dnf nor yum")
	f.lookPath = fakeTools(t, map[string]string{"yum": "echo 'Cache-only enabled but no cache for base' >&2; exit 1"})
	_, err = f.Call(t.Context(), Args{})
	functionstest.WantCode(t, err, 503, "yum makecache")
	f.lookPath = fakeTools(t, map[string]string{"dnf": "sleep 60"})
	// A hanging dnf is bounded by the call's deadline.
	short, stop := contextWithTimeout(t.Context(), 300)
	defer stop()
	_, err = f.Call(short, Args{})
	functionstest.WantCode(t, err, 504, "did not finish")
}

func TestSecPatchesAlpineUpgrades(t *testing.T) {
	res, err := callFn(t, pkgdbData+"alpine-index", "installed-sec-patches", "")
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*SecPatchesReply)
	var got []string
	for _, p := range r.Pending {
		got = append(got, fmt.Sprintf("%s %s>%s %s", p.Name, p.Installed, p.Available, p.Source))
	}
	want := "[busybox 1.36.0-r9>1.36.1-r2 busybox busybox-binsh 1.36.0-r9>1.36.1-r2 busybox libcrypto3 3.1.0-r4>3.1.4-r1 openssl " +
		"libssl3 3.1.0-r4>3.1.4-r1 openssl musl 1.2.4-r0>1.2.4-r2 musl musl-utils 1.2.4-r0>1.2.4-r2 musl ssl_client 1.36.0-r9>1.36.1-r2 busybox]"
	if fmt.Sprint(got) != want || r.PendingCount != 7 || r.Source != "apk" || len(r.SecurityIndex) != 2 || len(r.Notes) == 0 {
		t.Errorf("got %s (%d, %q, %d indexes)\nwant %s", got, r.PendingCount, r.Source, len(r.SecurityIndex), want)
	}
	// No index: 503 naming what to do, never an empty list.
	_, err = callFn(t, alpineRoot, "installed-sec-patches", "")
	functionstest.WantCode(t, err, 503, "apk update")
}

// contextWithTimeout is context.WithTimeout in milliseconds.
func contextWithTimeout(parent context.Context, ms int) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, time.Duration(ms)*time.Millisecond)
}
