package controlsvc

import (
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Folding refused connections: a machine that keeps retrying (removed,
// or not yet accepted, reconnecting every few seconds) wrote one audit
// record per attempt. The first refusal of a name from an address (per
// site) is written at once; the same name, key and reason refused again
// from that address within auditFoldWindow of it are counted in one open
// record, written when the window ends (the noter's tick), when a refusal
// of that name from that address differs (another key or reason), or when
// the log closes. The address is folded on, never overwritten: attempts
// under one name from two addresses (a host and someone posing as it) are
// two records, each with its own address. An attacker making up names (or
// connecting from many addresses) gets a record for each (as before): the
// open records are bounded by maxFolds, past which refusals are written
// one by one.

const (
	// auditFoldWindow is how long a refusal's repeats are counted in one
	// record.
	auditFoldWindow = time.Minute
	// maxFolds bounds the names (and addresses) with an open record.
	maxFolds = 10000
)

// foldKey is what refusals are folded on: the site, the name and the
// address the refusal came from (a record names one address only).
type foldKey struct{ site, name, ip string }

// foldState is a name's open record: the refusal written at opened, and
// the repeats since (n, from first to last).
type foldState struct {
	rec         fleet.AuditRecord
	opened      time.Time
	n           int
	first, last time.Time
}

// folded is the record of st's repeats, or nil when there were none.
func (st *foldState) folded() *fleet.AuditRecord {
	if st.n == 0 {
		return nil
	}
	r := st.rec
	r.Time, r.FirstAt, r.Count = st.last, st.first, st.n
	return &r
}

// refused records a refused connection, folding repeats (see above).
func (a *auditLog) refused(rec fleet.AuditRecord) {
	now := a.now().UTC()
	rec.Time = now
	k := foldKey{rec.Site, rec.Name, rec.IP}
	a.foldMu.Lock()
	st := a.folds[k]
	if st != nil && st.rec.Key == rec.Key && st.rec.Reason == rec.Reason && now.Sub(st.opened) < a.foldWindow {
		if st.n == 0 {
			st.first = now
		}
		st.n++
		st.last = now
		a.foldMu.Unlock()
		return
	}
	var flush *fleet.AuditRecord
	if st != nil {
		flush = st.folded()
		delete(a.folds, k)
	}
	if len(a.folds) < maxFolds {
		a.folds[k] = &foldState{rec: rec, opened: now}
	}
	a.foldMu.Unlock()
	if flush != nil {
		a.record(*flush)
	}
	a.record(rec)
}

// flushFolds writes the open records whose window has ended (all: every
// one) and forgets them.
func (a *auditLog) flushFolds(all bool) {
	now := a.now().UTC()
	var out []fleet.AuditRecord
	a.foldMu.Lock()
	for k, st := range a.folds {
		if !all && now.Sub(st.opened) < a.foldWindow {
			continue
		}
		if r := st.folded(); r != nil {
			out = append(out, *r)
		}
		delete(a.folds, k)
	}
	a.foldMu.Unlock()
	for _, r := range out {
		a.record(r)
	}
}
