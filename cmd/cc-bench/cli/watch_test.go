package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// TestWatchColumns: the present lines are held until the list is complete
// and padded to their widest cells (an escaped control character counts
// as what is printed); a later, wider cell widens the lines after it.
func TestWatchColumns(t *testing.T) {
	at := time.Date(2026, 3, 1, 9, 30, 0, 0, time.Local)
	ev := func(name, machine string, labels map[string]string, reason string) []string {
		return eventCols(fleet.PresenceEvent{Event: name, Machine: machine, Labels: labels, Time: at, Reason: reason})
	}
	var out strings.Builder
	cols := &watchTable{widths: []int{0, len("present")}}
	for _, cells := range [][]string{
		ev("present", "10.0.0.1_web01", map[string]string{"role": "web", "dc": "nj"}, ""),
		ev("present", "10.0.0.22_db1", map[string]string{"role": "db\x1b"}, ""),
	} {
		if err := cols.add(&out, cells...); err != nil {
			t.Fatal(err)
		}
	}
	if out.Len() != 0 {
		t.Fatalf("present lines printed before the list was complete: %q", out.String())
	}
	steps := []func() error{
		func() error { return cols.flush(&out) },
		func() error { return cols.add(&out, ev("left", "10.0.0.22_db1", nil, "Client Closed")...) },
		func() error {
			return cols.add(&out, ev("joined", "10.0.0.100_longer-name", map[string]string{"role": "web"}, "found by resync")...)
		},
		func() error { return cols.add(&out, ev("left", "10.0.0.1_web01", nil, "")...) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	want := `2026-03-01 09:30:00  present  10.0.0.1_web01  dc=nj,role=web
2026-03-01 09:30:00  present  10.0.0.22_db1   role=db\x1b
2026-03-01 09:30:00  left     10.0.0.22_db1   -               (Client Closed)
2026-03-01 09:30:00  joined   10.0.0.100_longer-name  role=web        (found by resync)
2026-03-01 09:30:00  left     10.0.0.1_web01          -
`
	if got := out.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
