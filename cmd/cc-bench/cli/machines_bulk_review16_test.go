package cli

import (
	"strings"
	"testing"
)

// TestReview16BulkAcceptByStrangersWords: a pending machine's id is
// whatever the stranger connecting chose, and --where ip=… reads the ip
// from that id (bench/selector.go: "the id before its first _"), not
// from the address the connection came from (which the callout records
// in the pending entry). So `machines accept --where ip=10.0.0.* --yes`
// (or a glob '10.0.0.*') registers anyone anywhere who names themself
// 10.0.0.x_something, and the confirmation table (ID KEY SITE) does not
// show the address either, so an operator who answers y cannot see it.
// Here the stranger connects from 127.0.0.1 as 10.0.0.66_evil: it must
// not be accepted by a selection of 10.0.0.*, or at least the listing
// the operator confirms must show where it came from.
func TestReview16BulkAcceptByStrangersWords(t *testing.T) {
	f := startFleet(t)
	knock(t, f, 31, "10.0.0.66_evil")
	setConfirm(t, "y\n", true)
	_, stderr, code := cc(t, f.env(), "machines", "accept", "--where", "ip=10.0.0.*")
	_, accepted := f.svc.Registry().Machine("10.0.0.66_evil")
	if accepted && !strings.Contains(stderr, "127.0.0.1") {
		t.Fatalf("accept --where ip=10.0.0.* (exit %d) registered 10.0.0.66_evil, which connected from 127.0.0.1, "+
			"and the listing confirmed never said so:\n%s", code, stderr)
	}
}
