package functions

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/agent/functions/functionstest"
	"github.com/commandcontrol/commandcontrol/agent/pkgdb"
	"github.com/commandcontrol/commandcontrol/agent/pkgdb/pkgdbtest"
)

func TestSecPatchesFixture(t *testing.T) {
	res, err := callFn(t, debianRoot, "installed-sec-patches", "")
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*SecPatchesReply)
	want := pkgdbtest.ReadTable(t, pkgdbData+"expected/pending-security.tsv", '\t')
	if r.PendingCount != len(want) || len(r.Pending) != 82 {
		t.Fatalf("got %d pending (count %d), want %d (82)", len(r.Pending), r.PendingCount, len(want))
	}
	got := map[string]bool{}
	for _, p := range r.Pending {
		got[fmt.Sprintf("%s %s %s %s %s", p.Name, p.Arch, p.Source, p.Installed, p.Available)] = true
	}
	for _, row := range want {
		w := fmt.Sprintf("%s %s %s %s %s", row[0], row[1], row[2], row[3], row[4])
		if !got[w] {
			t.Errorf("missing pending %q", w)
		}
	}
	if len(r.SecurityIndex) != 1 {
		t.Fatalf("got %d security indexes, want 1: %+v", len(r.SecurityIndex), r.SecurityIndex)
	}
	ix := r.SecurityIndex[0]
	wantDate := time.Date(2026, 11, 24, 0, 34, 33, 0, time.UTC)
	if ix.Suite != "oldstable-security" || !ix.Date.Equal(wantDate) || len(ix.Packages) != 1 {
		t.Errorf("got index %+v, want suite oldstable-security dated %v with one Packages file", ix, wantDate)
	}
	// 156 installed packages appear in the index; those not pending carry
	// the security version itself.
	if r.InstalledCount+r.PendingCount > 156 || r.InstalledCount == 0 {
		t.Errorf("got %d installed from -security and %d pending; at most 156 together", r.InstalledCount, r.PendingCount)
	}
	for _, p := range r.Installed {
		if p.Name == "openssl" || p.Name == "tzdata" {
			t.Errorf("%s is pending, yet listed as installed from -security", p.Name)
		}
	}
}

func TestSecPatchesFilter(t *testing.T) {
	res, err := callFn(t, debianRoot, "installed-sec-patches", `{"name":"libssl*"}`)
	if err != nil {
		t.Fatal(err)
	}
	r := res.(*SecPatchesReply)
	got := fmt.Sprint(r.Pending)
	want := "[{libssl-dev amd64 3.0.19-1~deb12u2 3.0.22-1~deb12u2 openssl  } {libssl3 amd64 3.0.19-1~deb12u2 3.0.22-1~deb12u2 openssl  }]"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestSecPatchesUnavailable(t *testing.T) {
	// dpkg present, no security index.
	root := t.TempDir()
	pkgdbtest.CopyFile(t, debianRoot+"/"+pkgdb.DpkgStatusPath, filepath.Join(root, pkgdb.DpkgStatusPath))
	_, err := callFn(t, root, "installed-sec-patches", "")
	functionstest.WantCode(t, err, 503, "apt")
	if err := os.MkdirAll(filepath.Join(root, pkgdb.AptListsPath), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = callFn(t, root, "installed-sec-patches", "")
	functionstest.WantCode(t, err, 503, "no -security suite", "apt-get update")
	// No dpkg at all.
	_, err = callFn(t, t.TempDir(), "installed-sec-patches", "")
	functionstest.WantCode(t, err, 503, pkgdb.DpkgStatusPath)
	// apk machine.
	_, err = callFn(t, alpineRoot, "installed-sec-patches", "")
	functionstest.WantCode(t, err, 503, "apk")
}

// TestSecPatchesIndexExpiryReadsEnvClock: whether the security index has
// expired is decided by Env.Now, not the wall clock: within Valid-Until
// (Tue, 01 Dec 2026 00:34:33 UTC) there is no note, a second after it and
// years after it the note says when it expired.
func TestSecPatchesIndexExpiryReadsEnvClock(t *testing.T) {
	validUntil := time.Date(2026, 12, 1, 0, 34, 33, 0, time.UTC)
	const note = "deb.debian.org_debian-security_dists_bookworm-security_InRelease expired on 2026-12-01T00:34:33Z: the pending list may be out of date; run apt-get update"
	for _, c := range []struct {
		now     time.Time
		expired bool
	}{
		{fixtureTime, false},
		{validUntil, false},
		{validUntil.Add(time.Second), true},
		{validUntil.AddDate(20, 0, 0), true},
	} {
		fn, _ := newSecPatches(&Env{Root: debianRoot, Now: func() time.Time { return c.now }})
		res, err := fn.Call(t.Context(), Args{})
		if err != nil {
			t.Fatal(err)
		}
		notes := res.(*SecPatchesReply).Notes
		has := false
		for _, n := range notes {
			has = has || n == note
		}
		if has != c.expired {
			t.Errorf("at %v: got notes %q, want the expiry note %v", c.now, notes, c.expired)
		}
	}
}
