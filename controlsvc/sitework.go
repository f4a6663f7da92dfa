package controlsvc

import (
	"fmt"
	"sync"
	"time"
)

// What one remote site can make the control service do is bounded, so a
// compromised site (whoever holds its broker) costs the hub a fixed
// amount of work and memory, and the hub's own brokers are served first:
//
//   - its events wait in a queue of their own (siteEventQueue), handled
//     on a goroutine of their own; past the bound they are dropped (the
//     next resync repairs what they would have told);
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
)

// siteWork is the per-site state of that bounding.
type siteWork struct {
	mu    sync.Mutex
	sites map[string]*siteState
}

type siteState struct {
	jobs      []func()
	working   bool
	resyncing bool
	warns     map[string]*warnState
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

// now is the service's clock.
func (s *Service) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

// siteWarn logs msg about site at most once per siteWarnEvery for kind,
// saying how many like it were held back since the last one.
func (s *Service) siteWarn(site, kind, msg string, args ...any) {
	now := s.now()
	s.sites.mu.Lock()
	ws := s.sites.site(site).warns[kind]
	if ws == nil {
		ws = &warnState{}
		s.sites.site(site).warns[kind] = ws
	}
	if !ws.last.IsZero() && now.Sub(ws.last) < siteWarnEvery {
		ws.held++
		s.sites.mu.Unlock()
		return
	}
	held := ws.held
	ws.last, ws.held = now, 0
	s.sites.mu.Unlock()
	args = append([]any{"site", site}, args...)
	if held > 0 {
		args = append(args, "like_lines_held_back", held)
	}
	s.log.Warn(msg, args...)
}

// siteJob queues job (closing connections at site) to run after the
// site's earlier ones, on at most one goroutine per site. With siteJobQueue
// jobs already waiting it is dropped (and logged, rate-limited): a site
// that never answers its KICKs costs a bounded queue, not a goroutine per
// request it provoked.
func (s *Service) siteJob(site, what string, job func()) bool {
	s.sites.mu.Lock()
	st := s.sites.site(site)
	if len(st.jobs) >= siteJobQueue {
		s.sites.mu.Unlock()
		s.siteWarn(site, "jobs", fmt.Sprintf("too many connections waiting to be closed at a site (%d); not closing more until they are done", siteJobQueue),
			"dropped", what)
		return false
	}
	st.jobs = append(st.jobs, job)
	start := !st.working
	st.working = true
	s.sites.mu.Unlock()
	if start {
		go s.runSiteJobs(site)
	}
	return true
}

func (s *Service) runSiteJobs(site string) {
	for {
		s.sites.mu.Lock()
		st := s.sites.site(site)
		if len(st.jobs) == 0 {
			st.working = false
			s.sites.mu.Unlock()
			return
		}
		job := st.jobs[0]
		st.jobs[0] = nil
		st.jobs = st.jobs[1:]
		s.sites.mu.Unlock()
		job()
	}
}

// startSiteResync marks site's part of a resync as running; false when
// the previous one still is (it has a deadline: the next resync takes
// the site up again).
func (s *Service) startSiteResync(site string) bool {
	s.sites.mu.Lock()
	defer s.sites.mu.Unlock()
	st := s.sites.site(site)
	if st.resyncing {
		return false
	}
	st.resyncing = true
	return true
}

func (s *Service) endSiteResync(site string) {
	s.sites.mu.Lock()
	defer s.sites.mu.Unlock()
	s.sites.site(site).resyncing = false
}
