package broker

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// logAdapter sends nats-server's log to slog. The server logs every
// refused publish or subscription ("Publish Violation - Subject …"); a
// client sending nothing but refused messages would turn each into a log
// line, so those are logged at most violationBurst per violationWindow,
// and the number left out is logged when the window ends.
type logAdapter struct {
	l   *slog.Logger
	now func() time.Time

	mu         sync.Mutex
	windowEnds time.Time
	logged     int
	suppressed int
}

const (
	violationWindow = 10 * time.Second
	violationBurst  = 20
)

func newLogAdapter(l *slog.Logger, now func() time.Time) *logAdapter {
	if now == nil {
		now = time.Now
	}
	return &logAdapter{l: l, now: now}
}

func (a *logAdapter) Noticef(format string, v ...any) { a.l.Info(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }

func (a *logAdapter) Errorf(format string, v ...any) {
	if strings.Contains(format, " Violation - Subject ") && !a.admitViolation() {
		return
	}
	a.l.Error(fmt.Sprintf(format, v...))
}

// admitViolation reports whether a permission-violation line may be
// logged now, and logs how many were left out of the window that ended.
func (a *logAdapter) admitViolation() bool {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if !now.Before(a.windowEnds) {
		if a.suppressed > 0 {
			a.l.Error("permission violations not logged (a client kept sending what it may not)",
				"count", a.suppressed, "window", violationWindow)
		}
		a.windowEnds, a.logged, a.suppressed = now.Add(violationWindow), 0, 0
	}
	if a.logged < violationBurst {
		a.logged++
		return true
	}
	a.suppressed++
	return false
}
