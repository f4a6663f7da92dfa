package cli

// These tests run cc-bench against the REAL stack in-process
// (internal/stacktest): the control service with its embedded broker and
// auth callout, real agents connecting with their own nkeys, operators in
// the real registry. Keys are deterministic; times are masked in golden
// files.

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/commandcontrol/commandcontrol/agent/functions"
	"github.com/commandcontrol/commandcontrol/controlsvc"
	"github.com/commandcontrol/commandcontrol/fleet"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// The CLI's clock runs 90 minutes ahead of the control service's, so an
// uptime shows as 1h30m.
func TestMain(m *testing.M) {
	time.Local = time.UTC
	now = func() time.Time { return time.Now().Add(90 * time.Minute) }
	os.Exit(m.Run())
}

// operatorKey makes a deterministic operator nkey from one byte.
func operatorKey(t *testing.T, b byte) (seed []byte, pub string) {
	t.Helper()
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	seed, _ = kp.Seed()
	pub, _ = kp.PublicKey()
	return seed, pub
}

type testFleet struct {
	t                   *testing.T
	svc                 *controlsvc.Service
	url                 string
	adminKey, viewerKey string // key files
}

// startFleet starts a control service whose admin has operatorKey 1 (its
// seed file is the data directory's admin.nk), and registers a viewer
// with operatorKey 2.
func startFleet(t *testing.T) *testFleet {
	t.Helper()
	adminSeed, _ := operatorKey(t, 1)
	admin, err := nkeys.FromSeed(adminSeed)
	if err != nil {
		t.Fatal(err)
	}
	svc := stacktest.StartControl(t, stacktest.WithAdminKey(admin))
	viewerSeed, _ := operatorKey(t, 2)
	viewer, _ := nkeys.FromSeed(viewerSeed)
	stacktest.AddOperator(t, svc, "viewer", fleet.RoleViewer, viewer)
	return &testFleet{t: t, svc: svc, url: svc.ClientURL(),
		adminKey: svc.AdminKeyPath(), viewerKey: stacktest.WriteSeed(t, "viewer", viewerSeed)}
}

// agent starts a real agent for machine id with labels, serving fns beside
// the built-ins, and waits until it is ONLINE.
func (f *testFleet) agent(id string, labels map[string]string, fns ...functions.Function) {
	f.t.Helper()
	stacktest.StartAgent(f.t, f.svc, id, labels, fns...)
}

// cc runs cc-bench with env vars (KEY=value) and args.
func cc(t *testing.T, vars map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return ccCtx(context.Background(), t, vars, &stacktest.Buffer{}, args...)
}

func ccCtx(ctx context.Context, t *testing.T, vars map[string]string, out *stacktest.Buffer, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var errb stacktest.Buffer
	code = run(ctx, args, out, &errb, func(k string) string { return vars[k] })
	return out.String(), errb.String(), code
}

// env returns the CC_SERVER / CC_KEY variables for the fleet as admin.
func (f *testFleet) env() map[string]string {
	return map[string]string{"CC_SERVER": f.url, "CC_KEY": f.adminKey}
}

var (
	tookRe      = regexp.MustCompile(`took [0-9.]+[µnm]?s`)
	tableTimeRe = regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d`)
	jsonTimeRe  = regexp.MustCompile(`"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"`)
)

// golden compares got with testdata/name.golden, or rewrites it with
// -update. Call durations are replaced by "took X", the control service's
// times by YYYY-MM-DD hh:mm:ss (as wide, so tables stay aligned) or, in
// JSON, "TIME".
func golden(t *testing.T, name, got string) {
	t.Helper()
	got = tookRe.ReplaceAllString(got, "took X")
	got = tableTimeRe.ReplaceAllString(got, "YYYY-MM-DD hh:mm:ss")
	got = jsonTimeRe.ReplaceAllString(got, `"TIME"`)
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", name, path,
			got, strings.TrimRight(string(want), "\n"))
	}
}
