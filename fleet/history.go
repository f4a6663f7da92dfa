package fleet

import "time"

// OpHistory reads the machines' join and leave history (any operator, a
// viewer too): request [HistoryRequest], reply [HistoryPage].
const OpHistory = "history"

// History event names: the same as the presence events'.
const (
	HistoryJoined = EventJoined
	HistoryLeft   = EventLeft
)

// HistoryMaxLimit bounds the entries of one [HistoryPage].
const HistoryMaxLimit = 10000

// Seen is what the control service remembers of a registered machine's
// presence, kept durably across its restarts: whether it is ONLINE, since
// when it is ONLINE (or offline), when it was last seen, and why its last
// connection closed. A machine never seen since it was registered has none.
type Seen struct {
	Online bool `json:"online"`
	// Since is when the machine joined (ONLINE) or left (offline).
	Since time.Time `json:"since"`
	// LastSeen is when it was last known connected: the time of the
	// answer for an ONLINE machine, when it left for one offline.
	LastSeen time.Time `json:"last_seen"`
	// Reason is why its last connection closed, as its broker said
	// ("Client Closed", "Stale Connection", …); "" while it never left.
	Reason string `json:"reason,omitempty"`
}

// HistoryRequest is the body of [OpHistory]: the entries with times in
// [Since, Until) (zero: unbounded), of Machine only when set, oldest first
// (Newest: newest first), at most Limit (0: 1000; at most
// [HistoryMaxLimit]). Cursor, from the previous page, continues after it.
type HistoryRequest struct {
	Since   time.Time `json:"since,omitzero"`
	Until   time.Time `json:"until,omitzero"`
	Machine string    `json:"machine,omitempty"`
	Limit   int       `json:"limit,omitempty"`
	Newest  bool      `json:"newest,omitempty"`
	Cursor  uint64    `json:"cursor,omitempty"`
}

// HistoryEntry is one join or leave of a machine.
type HistoryEntry struct {
	// Seq numbers the entry in the history (the cursor of a page).
	Seq     uint64    `json:"seq"`
	Event   string    `json:"event"`
	Machine string    `json:"machine"`
	Time    time.Time `json:"time"`
	// Reason is the broker's disconnect reason of a left entry.
	Reason string `json:"reason,omitempty"`
	// Labels are the machine's labels when it joined or left.
	Labels map[string]string `json:"labels,omitempty"`
}

// HistoryPage answers [OpHistory]. More is set when entries beyond this
// page match: ask again with Cursor. Oldest is the time of the oldest
// entry still kept (zero: none), RetentionSeconds how long entries are
// kept, and Trimmed is set once older entries have been deleted (past the
// retention or the history's size): before Oldest they are gone, not
// missing. PerMachine is how many joins, and leaves, are kept of one
// machine at most (its oldest go first, never another machine's);
// MachineTrimmed, asked for one machine, says it reached that bound: its
// older joins or leaves are gone, even after Oldest.
type HistoryPage struct {
	Entries          []HistoryEntry `json:"entries"`
	More             bool           `json:"more,omitempty"`
	Cursor           uint64         `json:"cursor,omitempty"`
	Oldest           time.Time      `json:"oldest,omitzero"`
	RetentionSeconds int64          `json:"retention_seconds"`
	Trimmed          bool           `json:"trimmed,omitempty"`
	PerMachine       int64          `json:"per_machine,omitempty"`
	MachineTrimmed   bool           `json:"machine_trimmed,omitempty"`
}
