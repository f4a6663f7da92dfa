package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
	"github.com/commandcontrol/commandcontrol/internal/stacktest"
)

// TestHistoryCommand: against the real stack, an agent that stops shows
// in cc-bench history as joined then left with the broker's reason (in
// time order, --where by the labels it had, --machine, --json), in
// servers --all as OFFLINE since then with the reason, and in machines ls
// as OFFLINE with since and last seen; bad flags are usage errors that
// say what to give.
func TestHistoryCommand(t *testing.T) {
	f := smallFleet(t)
	a := stacktest.StartAgent(t, f.svc, "10.0.0.5_db02", map[string]string{"role": "db"})
	a.Close()
	viewer := map[string]string{"CC_SERVER": f.url, "CC_KEY": f.viewerKey}
	stacktest.WaitFor(t, "db02's leave in the history", stacktest.WaitTimeout, func() bool {
		out, _, code := cc(t, viewer, "history", "--machine", "10.0.0.5_db02", "--json")
		return code == exitOK && strings.Count(out, "\n") == 2
	})
	var log strings.Builder
	for _, s := range []struct {
		args []string
		code int
	}{
		{[]string{"history", "--since", "0"}, exitOK},
		{[]string{"history", "--where", "role=db"}, exitOK},
		{[]string{"history", "--machine", "10.0.0.5_db02", "--json"}, exitOK},
		{[]string{"history", "--newest", "--limit", "2"}, exitOK},
		{[]string{"history", "--since", "1h", "--until", "2h"}, exitUsage},
		{[]string{"history", "--machine", "web 01"}, exitUsage},
		{[]string{"history", "--limit", "-1"}, exitUsage},
		{[]string{"history", "--where", "role"}, exitUsage},
		{[]string{"servers", "--all", "--where", "role=db"}, exitOK},
		{[]string{"servers", "--all", "--where", "role=db", "--json"}, exitOK},
		{[]string{"machines", "ls"}, exitOK},
	} {
		stdout, stderr, code := cc(t, viewer, s.args...)
		if code != s.code {
			t.Errorf("%q: exit %d, want %d: %s", s.args, code, s.code, stderr)
		}
		log.WriteString("$ cc-bench " + strings.Join(s.args, " ") + "\n" + stdout + stderr)
	}
	golden(t, "history", log.String())
}

// TestTrimmedNote: the note that older entries are gone is printed only
// when some were deleted and the period asked for reaches past them.
func TestTrimmedNote(t *testing.T) {
	oldest := time.Date(2030, 1, 31, 0, 0, 0, 0, time.UTC)
	h := &bench.History{Oldest: oldest, Retention: 30 * 24 * time.Hour, Trimmed: true}
	for _, tt := range []struct {
		h     *bench.History
		since time.Time
		want  string
	}{
		{h, time.Time{}, "history is kept for 30d0h (cc-control --history-retention); entries before 2030-01-31 00:00:00 are gone"},
		{h, oldest.Add(-time.Hour), "history is kept for 30d0h (cc-control --history-retention); entries before 2030-01-31 00:00:00 are gone"},
		{h, oldest, ""},
		{&bench.History{Oldest: oldest, Retention: time.Hour}, time.Time{}, ""},
		{&bench.History{Retention: time.Hour, Trimmed: true}, oldest, "history is kept for 1h0m (cc-control --history-retention); everything older is gone"},
	} {
		if got := trimmedNote(tt.h, tt.since); got != tt.want {
			t.Errorf("trimmedNote(%+v, %v) = %q, want %q", tt.h, tt.since, got, tt.want)
		}
	}
}
