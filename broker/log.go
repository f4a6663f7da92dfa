package broker

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"
)

// logAdapter sends nats-server's log to slog, quieter than the server
// would be:
//
//   - the start-up banner (the JetStream ASCII art, the indented
//     "Version:", "Max Memory:" … lines, the boxes around them) goes to
//     debug; "Starting nats-server", "Server is ready" and the listen
//     addresses stay at info;
//   - a connection the auth callout refused was logged three times (the
//     control service's "connection refused" with who and why, then the
//     server's "authentication error - Nkey …" and "Auth callout service
//     returned an error: …"): the server's two go to debug, and the
//     control service's line is the one at warn. Refusals the callout did
//     not explain (it did not answer in time: is the control service up?)
//     are counted, one warn line per violationWindow;
//   - every refused publish or subscription ("Publish Violation - Subject
//     …"): a client sending nothing but refused messages would turn each
//     into a log line, so those are logged at most violationBurst per
//     violationWindow, and the number left out is logged when the window
//     ends.
type logAdapter struct {
	l   *slog.Logger
	now func() time.Time

	violations burstLog

	// unexplained counts authentication errors the callout did not
	// explain: each "authentication error" line adds one, each "Auth
	// callout service returned an error" (which the server logs right
	// after the first, for a refusal of the callout) takes one away. When
	// a window has passed, an authentication error reports the count left.
	mu          sync.Mutex
	unexplained int
	checkAt     time.Time
}

const (
	violationWindow = 10 * time.Second
	violationBurst  = 20
)

func newLogAdapter(l *slog.Logger, now func() time.Time) *logAdapter {
	if now == nil {
		now = time.Now
	}
	return &logAdapter{l: l, now: now,
		violations: burstLog{level: slog.LevelError, what: "permission violations not logged (a client kept sending what it may not)"},
	}
}

func (a *logAdapter) Noticef(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if isBanner(msg) {
		a.l.Debug(msg)
		return
	}
	a.l.Info(msg)
}

func (a *logAdapter) Warnf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.HasPrefix(strings.ToLower(msg), "auth callout service returned an error") {
		a.mu.Lock()
		a.unexplained = max(0, a.unexplained-1)
		a.mu.Unlock()
		a.l.Debug(msg) // the control service logged the refusal, with who
		return
	}
	a.l.Warn(msg)
}

func (a *logAdapter) Fatalf(format string, v ...any) { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Debugf(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Tracef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }

func (a *logAdapter) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	switch {
	case strings.Contains(format, " Violation - Subject ") && !a.violations.admit(a.l, a.now()):
		return
	case refusedClient.MatchString(msg):
		a.l.Debug(msg) // the control service's line says who and why
		a.countUnexplained()
		return
	}
	a.l.Error(msg)
}

// countUnexplained counts an authentication error until the callout's
// explanation comes, first reporting the count left from before, once a
// window has passed since the last report.
func (a *logAdapter) countUnexplained() {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if !now.Before(a.checkAt) {
		if a.unexplained > 0 {
			a.l.Warn("connections refused without an answer from the auth callout (is the control service up? the debug log names each)",
				"count", a.unexplained)
		}
		a.unexplained, a.checkAt = 0, now.Add(violationWindow)
	}
	a.unexplained++
}

// refusedClient matches the server's line for a connection the callout
// decides on (a client "cid:", a leaf link "lid:"; not a route) that
// failed authentication.
var refusedClient = regexp.MustCompile(` - [cl]id:\d+ - authentication error\b`)

// bannerField matches the indented "Key: value" lines of the server's
// start-up banner ("  Version:  2.12.0", "  Max Memory:      17 GB").
var bannerField = regexp.MustCompile(`^\s+[A-Za-z][A-Za-z ]*:`)

// isBanner reports whether a notice is part of the start-up banner: a
// blank line, ASCII art (no letter or digit), a box line ("---- JETSTREAM
// ----"), the documentation link, or an indented field.
func isBanner(msg string) bool {
	if strings.HasPrefix(msg, "----") || strings.Contains(msg, "https://docs.nats.io/") || bannerField.MatchString(msg) {
		return true
	}
	return !strings.ContainsFunc(msg, func(r rune) bool {
		return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
	})
}

// burstLog bounds one kind of line: at most violationBurst per
// violationWindow, then one line (at level, saying what) counting those
// left out when the window ends.
type burstLog struct {
	level slog.Level
	what  string

	mu         sync.Mutex
	windowEnds time.Time
	logged     int
	suppressed int
}

// admit reports whether a line may be logged now, and logs how many were
// left out of the window that ended.
func (b *burstLog) admit(l *slog.Logger, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !now.Before(b.windowEnds) {
		if b.suppressed > 0 {
			l.Log(context.Background(), b.level, b.what, "count", b.suppressed, "window", violationWindow)
		}
		b.windowEnds, b.logged, b.suppressed = now.Add(violationWindow), 0, 0
	}
	if b.logged < violationBurst {
		b.logged++
		return true
	}
	b.suppressed++
	return false
}
