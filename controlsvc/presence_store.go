package controlsvc

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// PresenceStateFile, in the data directory, keeps what a restarted
// control service needs so that a watcher that stayed connected loses
// nothing: the last event sequence number and the ONLINE machines. It is
// written at start, after every resync and at stop.
const PresenceStateFile = "presence.json"

// seqMargin is added to the saved sequence number on restart, so the new
// run's events number above every event the old run may have sent after
// its last save (a watcher drops events numbered at or below what it has).
const seqMargin = 1 << 24

type presenceState struct {
	Seq uint64 `json:"seq"`
	// Epoch is the numbering Seq belongs to: kept, so a restart that
	// reads this file continues it (above a margin) and watchers go on.
	Epoch  string   `json:"epoch,omitempty"`
	Online []string `json:"online"`
}

// restorePresence loads the state a previous run saved.
func (tr *presenceTracker) restorePresence() {
	b, err := os.ReadFile(filepath.Join(tr.dataDir, PresenceStateFile))
	if err != nil {
		return
	}
	var st presenceState
	if err := json.Unmarshal(b, &st); err != nil {
		tr.log.Warn("presence state unreadable; watchers may see joined again", "file", PresenceStateFile, "error", err)
		return
	}
	tr.state.restore(st)
}

// savePresence writes the current state.
func (tr *presenceTracker) savePresence() {
	b, _ := json.Marshal(tr.state.state())
	if err := writeFileAtomic(filepath.Join(tr.dataDir, PresenceStateFile), append(b, '\n'), 0o600); err != nil {
		tr.log.Warn("presence state not saved", "error", err)
	}
}

func (p *presence) restore(st presenceState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq = st.Seq + seqMargin
	if st.Epoch != "" {
		p.epoch = st.Epoch
	}
	p.ver++
	p.known = make(map[string]bool, len(st.Online))
	for _, id := range st.Online {
		p.known[id] = true
	}
}

func (p *presence) state() presenceState {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := presenceState{Seq: p.seq, Epoch: p.epoch, Online: make([]string, 0, len(p.machines))}
	for id := range p.machines {
		st.Online = append(st.Online, id)
	}
	sort.Strings(st.Online)
	return st
}

// settleKnownIf runs after each part of a resync (the hub's, or one
// site's) for the machines it covers (which; nil: all): a machine the
// previous run had ONLINE that is not ONLINE now left while the service
// was down. The others stay known until their part is done.
func (p *presence) settleKnownIf(which func(id string) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.known) == 0 {
		return
	}
	ids := make([]string, 0, len(p.known))
	for id := range p.known {
		if which == nil || which(id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		delete(p.known, id)
		if _, on := p.machines[id]; !on {
			p.emitLocked(fleet.EventLeft, id, "left while the control service was down")
		}
	}
	if len(p.known) == 0 {
		p.known = nil
	}
}
