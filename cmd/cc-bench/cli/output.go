package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/commandcontrol/commandcontrol/internal/termsafe"
)

// jsonLine writes v as one line of JSON.
func jsonLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// Every human-readable line goes out through table.row or printf, which
// escape what a terminal would act on (termsafe): labels, connection
// names, replies and error descriptions come from the network, some from
// clients that were never authenticated. JSON output (jsonLine) stays
// exact.

// table writes aligned columns, each cell escaped for the terminal.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) {
	for i, c := range cols {
		cols[i] = termsafe.String(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// lines is text of several lines given to printf as an argument: its
// newlines and tabs stay, everything else is escaped as in a string.
type lines string

// printf writes a line (or lines) for a person: each argument that is
// text (a string, an error, a Stringer) is escaped for the terminal as a
// single line, so a value cannot add a line or an escape of its own; the
// newlines and tabs of format stay.
func printf(w io.Writer, format string, args ...any) error {
	safe := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case lines:
			safe[i] = termsafe.Text(string(v))
		case string:
			safe[i] = termsafe.String(v)
		case error:
			safe[i] = termsafe.String(v.Error())
		case fmt.Stringer:
			safe[i] = termsafe.String(v.String())
		default:
			safe[i] = a
		}
	}
	_, err := io.WriteString(w, termsafe.Text(fmt.Sprintf(format, safe...)))
	return err
}

// labelText renders labels as k=v,k=v sorted by key, or "-".
func labelText(labels map[string]string) string {
	if len(labels) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}

// timeText renders t in local time, or "-" for the zero time.
func timeText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// ageText renders a duration coarsely: 42s, 12m5s, 5h12m, 3d4h.
func ageText(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// tookText renders how long a call took: 250µs, 12ms, 1.52s.
func tookText(d time.Duration) string {
	if d < time.Millisecond {
		return d.Round(time.Microsecond).String()
	}
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

// shortKey abbreviates a public key for a table.
func shortKey(k string) string {
	if len(k) <= 12 {
		return k
	}
	return k[:10] + "…"
}

// truncate cuts s to n characters, marking the cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// jsonLines prints items as JSON Lines, or returns err.
func jsonLines[T any](e *env, items []T, err error) error {
	if err != nil {
		return err
	}
	for _, it := range items {
		if err := jsonLine(e.stdout, it); err != nil {
			return err
		}
	}
	return nil
}

// done reports the outcome of a change: err, or v as JSON with --json, or
// the message format describes.
func (e *env) done(v any, err error, format string, args ...any) error {
	switch {
	case err != nil:
		return err
	case e.g.json:
		return jsonLine(e.stdout, v)
	case format == "":
		return nil
	}
	return printf(e.stdout, format+"\n", args...)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
