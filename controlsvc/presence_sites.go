package controlsvc

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// What one remote site can make the control service do is bounded, so a
// compromised site (whoever holds its broker) costs the hub a fixed
// amount of work and memory, and the hub's own brokers are served first:
//
//   - its events wait in a queue of their own (siteEventQueue), handled
//     on a goroutine of their own; past the bound they are dropped;
//   - its events are let through at a rate and burst sized from the
//     machines registered to it (siteEventAllowance); the rest are
//     dropped, counted, and the site's presence is repaired by a resync
//     of the site soon after (siteDropResyncDelay; at most one waiting);
//   - the connections the control service closes there (forged claims,
//     superseded connections, stale ones found by resync) wait in a
//     bounded queue (siteJobQueue) worked off by at most one goroutine;
//   - its part of a presence resync has its own deadline (siteResyncWait)
//     and bounds (maxSiteServers, siteConnSlack): a site past them keeps
//     what is known of it and does not hold up the hub's part;
//   - what it causes is logged at most once per siteWarnEvery per kind,
//     with the number of lines held back.
const (
	siteEventQueue = 4096
	siteJobQueue   = 256
	siteResyncWait = 10 * time.Second
	maxSiteServers = 16
	// siteConnSlack is how many connections a site's brokers may list
	// beyond two per machine registered to the site.
	siteConnSlack = 1024
	siteWarnEvery = 10 * time.Second
	// siteEventResize is how often a site's event allowance is sized
	// again from the machines registered to it.
	siteEventResize = 5 * time.Second
	// siteDropResyncDelay is how soon after a site's events were dropped
	// its presence is resynced.
	siteDropResyncDelay = time.Second
)

// siteEventAllowance is the rate (per second) and burst of events a site
// with machines registered to it may send: two per machine per second (a
// connect and a disconnect) and four in a burst, at least 50 and 200, so
// a site's machines can all reconnect at once while a site toggling its
// own machines cannot flood the hub's watchers.
func siteEventAllowance(machines int) (rate, burst float64) {
	return float64(max(50, 2*machines)), float64(max(200, 4*machines))
}

// siteWork is the per-site state of that bounding.
type siteWork struct {
	mu    sync.Mutex
	sites map[string]*siteState
	// start is when the service began watching sites' events: a site
	// not yet resynced has been unconfirmed since then.
	start time.Time
}

type siteState struct {
	jobs      []func()
	working   bool
	resyncing bool
	warns     map[string]*warnState

	// The site's event bucket: tokens left, refilled at rate up to burst
	// since filled; rate and burst were sized at sized.
	tokens, rate, burst float64
	filled, sized       time.Time
	// dropped counts the site's events dropped for its rate.
	dropped int64
	// resyncPending is set while a resync of the site is scheduled.
	resyncPending bool
	// backoff is the delay of the next scheduled resync, armed the last
	// time one was: a site that floods without pause makes them back
	// off to the periodic interval (siteResyncBackoff).
	backoff time.Duration
	armed   time.Time
	// lastResync is when the site's last good resync part took its
	// snapshot (zero: none yet).
	lastResync time.Time
}

type warnState struct {
	last time.Time
	held int
}

// site returns site's state, created on first use.
func (w *siteWork) site(name string) *siteState {
	if w.sites == nil {
		w.sites = map[string]*siteState{}
	}
	st := w.sites[name]
	if st == nil {
		st = &siteState{warns: map[string]*warnState{}}
		w.sites[name] = st
	}
	return st
}

// siteWarn logs msg about site at most once per siteWarnEvery for kind,
// saying how many like it were held back since the last one.
func (tr *presenceTracker) siteWarn(site, kind, msg string, args ...any) {
	tr.siteWarnWith(site, kind, msg, func() []any { return args })
}

// siteWarnWith is siteWarn whose attributes are made only for a line
// that is logged.
func (tr *presenceTracker) siteWarnWith(site, kind, msg string, attrs func() []any) {
	now := tr.clock()
	tr.sites.mu.Lock()
	ws := tr.sites.site(site).warns[kind]
	if ws == nil {
		ws = &warnState{}
		tr.sites.site(site).warns[kind] = ws
	}
	if !ws.last.IsZero() && now.Sub(ws.last) < siteWarnEvery {
		ws.held++
		tr.sites.mu.Unlock()
		return
	}
	held := ws.held
	ws.last, ws.held = now, 0
	tr.sites.mu.Unlock()
	args := append([]any{"site", site}, attrs()...)
	if held > 0 {
		args = append(args, "like_lines_held_back", held)
	}
	tr.log.Warn(msg, args...)
}

// siteJob queues job (closing connections at site) to run after the
// site's earlier ones, on at most one goroutine per site. With siteJobQueue
// jobs already waiting it is dropped (and logged, rate-limited): a site
// that never answers its KICKs costs a bounded queue, not a goroutine per
// request it provoked.
func (tr *presenceTracker) siteJob(site, what string, job func()) bool {
	tr.sites.mu.Lock()
	st := tr.sites.site(site)
	if len(st.jobs) >= siteJobQueue {
		tr.sites.mu.Unlock()
		tr.siteWarn(site, "jobs", fmt.Sprintf("too many connections waiting to be closed at a site (%d); not closing more until they are done", siteJobQueue),
			"dropped", what)
		return false
	}
	st.jobs = append(st.jobs, job)
	start := !st.working
	st.working = true
	tr.sites.mu.Unlock()
	if start {
		go tr.runSiteJobs(site)
	}
	return true
}

func (tr *presenceTracker) runSiteJobs(site string) {
	for {
		tr.sites.mu.Lock()
		st := tr.sites.site(site)
		if len(st.jobs) == 0 {
			st.working = false
			tr.sites.mu.Unlock()
			return
		}
		job := st.jobs[0]
		st.jobs[0] = nil
		st.jobs = st.jobs[1:]
		tr.sites.mu.Unlock()
		job()
	}
}

// startSiteResync marks site's part of a resync as running; false when
// the previous one still is (it has a deadline: the next resync takes
// the site up again).
func (tr *presenceTracker) startSiteResync(site string) bool {
	tr.sites.mu.Lock()
	defer tr.sites.mu.Unlock()
	st := tr.sites.site(site)
	if st.resyncing {
		return false
	}
	st.resyncing = true
	return true
}

func (tr *presenceTracker) endSiteResync(site string) {
	tr.sites.mu.Lock()
	defer tr.sites.mu.Unlock()
	tr.sites.site(site).resyncing = false
}

// admitSiteEvent takes one of site's event tokens; false when there is
// none: the event is dropped, counted, logged (rate-limited, saying how
// long the site's presence has gone unconfirmed) and a resync of the site
// is scheduled (under ctx).
func (tr *presenceTracker) admitSiteEvent(ctx context.Context, site string) bool {
	now := tr.clock()
	tr.sites.mu.Lock()
	st := tr.sites.site(site)
	if st.sized.IsZero() || now.Sub(st.sized) >= siteEventResize || now.Before(st.sized) {
		// The registry is read outside the lock: it may call back into
		// the service with its own lock held.
		tr.sites.mu.Unlock()
		rate, burst := siteEventAllowance(len(tr.reg.SiteMachines(site)))
		tr.sites.mu.Lock()
		if st.sized.IsZero() {
			st.tokens, st.filled = burst, now
		}
		st.rate, st.burst, st.sized = rate, burst, now
	}
	if now.After(st.filled) {
		st.tokens = min(st.burst, st.tokens+now.Sub(st.filled).Seconds()*st.rate)
		st.filled = now
	}
	if st.tokens >= 1 {
		st.tokens--
		tr.sites.mu.Unlock()
		return true
	}
	st.dropped++
	dropped, rate, burst := st.dropped, st.rate, st.burst
	arm := !st.resyncPending
	st.resyncPending = true
	tr.sites.mu.Unlock()
	if arm {
		tr.armSiteResync(ctx, site)
	}
	tr.siteWarnWith(site, "rate", "a site sent more events than its machines account for; the rest were dropped, and its presence is resynced shortly. "+
		"If this repeats, check the site's brokers: one may be compromised, or the site's machines reconnect in a loop",
		func() []any {
			return append([]any{"rate_per_second", rate, "burst", burst, "dropped_total", dropped}, tr.siteStaleArgs(site)...)
		})
	return false
}

// siteEventsDropped returns how many of site's events were dropped for
// its rate.
func (tr *presenceTracker) siteEventsDropped(site string) int64 {
	tr.sites.mu.Lock()
	defer tr.sites.mu.Unlock()
	return tr.sites.site(site).dropped
}

// scheduleSiteResync resyncs site's presence siteDropResyncDelay from now
// (under ctx), unless one is scheduled already: at most one waits, and
// one runs, per site.
func (tr *presenceTracker) scheduleSiteResync(ctx context.Context, site string) {
	tr.sites.mu.Lock()
	st := tr.sites.site(site)
	pending := st.resyncPending
	st.resyncPending = true
	tr.sites.mu.Unlock()
	if !pending {
		tr.armSiteResync(ctx, site)
	}
}

// armSiteResync runs the scheduled resync of site siteDropResyncDelay
// from now.
func (tr *presenceTracker) armSiteResync(ctx context.Context, site string) {
	tr.sites.mu.Lock()
	d := tr.sites.site(site).siteResyncBackoff(tr.clock(), tr.resyncInterval)
	tr.sites.mu.Unlock()
	time.AfterFunc(d, func() { tr.runScheduledSiteResync(ctx, site) })
}

// siteResyncBackoff is the delay of a resync scheduled at now: the first
// after a quiet spell (longer than ceiling since the last) waits
// siteDropResyncDelay, each one after it twice the one before, up to
// ceiling (the periodic resync interval). A resync of a site walks the
// hub's presence under the locks the hub's admissions take: a site that
// keeps its events over its rate must not have one every second.
func (st *siteState) siteResyncBackoff(now time.Time, ceiling time.Duration) time.Duration {
	ceiling = max(ceiling, siteDropResyncDelay)
	if st.backoff == 0 || now.Sub(st.armed) > ceiling {
		st.backoff = siteDropResyncDelay
	} else {
		st.backoff = min(2*st.backoff, ceiling)
	}
	st.armed = now
	return st.backoff
}

func (tr *presenceTracker) runScheduledSiteResync(ctx context.Context, site string) {
	if ctx.Err() != nil {
		return
	}
	if !tr.startSiteResync(site) {
		// The one running may have taken its snapshot before what was
		// dropped: this one runs after it.
		tr.armSiteResync(ctx, site)
		return
	}
	defer tr.endSiteResync(site)
	// Cleared before the snapshot is taken: what is dropped from now on
	// schedules the next one.
	tr.sites.mu.Lock()
	tr.sites.site(site).resyncPending = false
	tr.sites.mu.Unlock()
	tr.resyncSitePart(ctx, site, tr.state.generation(), tr.state.now())
}

// siteResynced records that a resync part of site took its snapshot at
// taken and folded it.
func (tr *presenceTracker) siteResynced(site string, taken time.Time) {
	if taken.IsZero() {
		taken = tr.clock()
	}
	tr.sites.mu.Lock()
	defer tr.sites.mu.Unlock()
	if st := tr.sites.site(site); taken.After(st.lastResync) {
		st.lastResync = taken
	}
}

// siteResyncAge is how long ago site's presence was last confirmed by a
// resync part of it (never is false), or, before the first, how long ago
// the service began watching it; ok is false when neither is known.
func (tr *presenceTracker) siteResyncAge(site string) (age time.Duration, never, ok bool) {
	now := tr.clock()
	tr.sites.mu.Lock()
	defer tr.sites.mu.Unlock()
	last := tr.sites.site(site).lastResync
	if last.IsZero() {
		if tr.sites.start.IsZero() {
			return 0, true, false
		}
		return max(0, now.Sub(tr.sites.start)), true, true
	}
	return max(0, now.Sub(last)), false, true
}

// siteStaleArgs are the log attributes saying how long site's presence
// has gone unconfirmed by a resync.
func (tr *presenceTracker) siteStaleArgs(site string) []any {
	age, never, ok := tr.siteResyncAge(site)
	switch {
	case !ok:
		return []any{"last_good_resync", "never"}
	case never:
		return []any{"last_good_resync", "never", "unconfirmed_for", age.Round(time.Second).String()}
	}
	return []any{"last_good_resync_ago", age.Round(time.Second).String()}
}

// startWatchingSites records when the service began watching sites.
func (tr *presenceTracker) startWatchingSites() {
	now := tr.clock()
	tr.sites.mu.Lock()
	defer tr.sites.mu.Unlock()
	if tr.sites.start.IsZero() {
		tr.sites.start = now
	}
}
