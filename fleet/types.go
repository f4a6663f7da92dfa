package fleet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Roles an operator may hold.
const (
	// RoleAdmin may call every function and manage the registry and operators.
	RoleAdmin = "admin"
	// RoleViewer may call read-only functions and list machines.
	RoleViewer = "viewer"
)

// ValidRole reports whether r is a known role.
func ValidRole(r string) bool { return r == RoleAdmin || r == RoleViewer }

// Presence event names.
const (
	EventJoined = "joined"
	EventLeft   = "left"
	// EventUpdated: an ONLINE machine's facts changed (its agent reported
	// new ones); the event carries them all.
	EventUpdated = "updated"
)

// Machine is a registered (whitelisted) machine.
type Machine struct {
	ID     string            `json:"id"`
	Key    string            `json:"key"`
	Labels map[string]string `json:"labels,omitempty"`
	// Site is the remote site whose broker the machine connects to ("":
	// the hub). A site's broker admits only its own machines, and the
	// hub believes a site only about those (see broker/leaf.go).
	Site    string    `json:"site,omitempty"`
	AddedAt time.Time `json:"added_at"`
	AddedBy string    `json:"added_by,omitempty"`
	// Online is filled in by the control service when listing.
	Online bool `json:"online"`
	// Seen is filled in by the control service when listing (nil: never
	// seen since it was registered).
	Seen *Seen `json:"seen,omitempty"`
}

// Pending is a machine id that tried to connect but is not in the registry
// (or presented a key other than the one on record).
//
// Nothing proves who is behind an unregistered id: anyone who can reach
// the broker may try any id with a key of their own. So a pending entry
// keeps every distinct key that tried the id (at most [MaxPendingKeys]),
// and an id tried with more than one key is flagged (MultipleKeys); the
// operator accepts the key it has checked on the host (cc-agent
// --print-key), naming it: see [MachineRequest].
type Pending struct {
	ID string `json:"id"`
	// Key, IP and Reason are those of the most recent attempt, kept for
	// clients that predate Keys; Attempts, FirstSeen and LastSeen cover
	// every key.
	Key       string    `json:"key"`
	IP        string    `json:"ip,omitempty"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Attempts  int       `json:"attempts"`
	// Reason says why it was refused, e.g. "not in the registry" or
	// "key does not match the key on record".
	Reason string `json:"reason,omitempty"`
	// Site is the remote site whose broker reported the most recent
	// attempt ("": the hub's own brokers); IP is then as that site said.
	Site string `json:"site,omitempty"`
	// Keys lists each distinct key that tried the id, most recent first.
	Keys []PendingKey `json:"keys,omitempty"`
	// MultipleKeys is set when more than one key tried the id: someone
	// other than the machine may be asking, and accepting needs the key.
	MultipleKeys bool `json:"multiple_keys,omitempty"`
	// KeysDropped counts keys that tried the id but were not kept, past
	// [MaxPendingKeys] (the least recently seen goes first).
	KeysDropped int `json:"keys_dropped,omitempty"`
}

// MaxPendingKeys bounds the distinct keys a pending entry keeps.
const MaxPendingKeys = 8

// PendingKey is one key that tried a pending id.
type PendingKey struct {
	Key       string    `json:"key"`
	IP        string    `json:"ip,omitempty"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Attempts  int       `json:"attempts"`
	Reason    string    `json:"reason,omitempty"`
	// Site is the remote site whose broker reported this key's most
	// recent attempt ("": the hub's own brokers). A site reports what it
	// likes about the machines at its broker, so its IP is the site's
	// word, and a key a site reported is accepted only at that site.
	Site string `json:"site,omitempty"`
}

// Operator is a human or script identity allowed to use the workbench.
type Operator struct {
	Name    string    `json:"name"`
	Key     string    `json:"key"`
	Role    string    `json:"role"`
	AddedAt time.Time `json:"added_at"`
	// Sessions lets a viewer list, watch and call sessions (an admin
	// always may).
	Sessions bool `json:"sessions,omitempty"`
}

// MaySeeSessions reports whether an operator of role with the sessions
// permission may list, watch and call sessions.
func MaySeeSessions(role string, sessions bool) bool { return role == RoleAdmin || sessions }

// Server is one ONLINE machine in a presence snapshot.
type Server struct {
	Machine     string            `json:"machine"`
	Labels      map[string]string `json:"labels,omitempty"`
	Since       time.Time         `json:"since"`
	Connections int               `json:"connections"`
	// IP is the address of its connection, as the broker saw it.
	IP string `json:"ip,omitempty"`
	// Location is where IP is (--sites, --geoip).
	Location *Location `json:"location,omitempty"`
	// Facts is what the machine's agent reports about its host; nil
	// before it reported any.
	Facts *Facts `json:"facts,omitempty"`
}

// PresenceSnapshot answers [PresenceSnapshotSubject]. Seq is the sequence
// number of the last event already folded into Servers: a watcher that
// subscribed to events before asking drops every event with Seq <= this.
//
// A large fleet's snapshot comes as several replies to the one request,
// each with the same Seq and Time, Part 1…Parts, so no message exceeds the
// broker's payload limit; Parts is 0 (omitted) when one reply holds all.
//
// Epoch names the control service's run that numbered Seq (random per
// start): sequence numbers compare only within one epoch, so a watcher
// that sees an event of another epoch has missed the change of numbering
// and reads a fresh snapshot.
//
// Asked with a [SnapshotRequest] whose IDs is set, the snapshot lists
// only the ONLINE machines' ids, in Machines, and Servers is empty: what
// a call to every ONLINE machine needs, at a fraction of the bytes and
// decoding. It is cut into parts and costs the asker's snapshot limit as
// the whole snapshot does.
type PresenceSnapshot struct {
	Seq      uint64    `json:"seq"`
	Epoch    string    `json:"epoch,omitempty"`
	Servers  []Server  `json:"servers"`
	Machines []string  `json:"machines,omitempty"`
	Time     time.Time `json:"time"`
	Part     int       `json:"part,omitempty"`
	Parts    int       `json:"parts,omitempty"`
}

// SnapshotRequest is the body of a presence snapshot request
// ([OpPresenceSnapshot], [PresenceSnapshotSubject]); an empty body asks
// for the whole snapshot.
type SnapshotRequest struct {
	// IDs asks for the machine ids alone ([PresenceSnapshot].Machines).
	IDs bool `json:"ids,omitempty"`
}

// ParseSnapshotRequest decodes a snapshot request's body: empty is the
// zero request (the whole snapshot).
func ParseSnapshotRequest(body []byte) (SnapshotRequest, error) {
	var r SnapshotRequest
	if len(bytes.TrimSpace(body)) == 0 {
		return r, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return SnapshotRequest{}, fmt.Errorf("presence snapshot request: %w (want {} or {\"ids\":true})", err)
	}
	if dec.More() {
		return SnapshotRequest{}, fmt.Errorf("presence snapshot request: data after the JSON object")
	}
	return r, nil
}

// SnapshotChunk is how many servers one snapshot reply holds at most.
const SnapshotChunk = 2000

// PresenceEvent is published on [PresenceEventSubject] when a machine joins
// (first authorised connection) or leaves (last connection gone).
type PresenceEvent struct {
	Event   string            `json:"event"`
	Machine string            `json:"machine"`
	Labels  map[string]string `json:"labels,omitempty"`
	Time    time.Time         `json:"time"`
	Seq     uint64            `json:"seq"`
	// Epoch is the numbering Seq belongs to (see [PresenceSnapshot]).
	Epoch string `json:"epoch,omitempty"`
	// Reason is the broker's disconnect reason for a left event.
	Reason string `json:"reason,omitempty"`
	// Facts are the machine's facts: in a joined event, and in an
	// updated event ([EventUpdated]) when its agent reported new ones.
	Facts *Facts `json:"facts,omitempty"`
}

// Control API operations (the <op> of [CtlSubject]).
const (
	OpWhoAmI          = "whoami"
	OpMachinesList    = "machines.list"
	OpMachinesPending = "machines.pending"
	OpMachinesAccept  = "machines.accept"
	OpMachinesAdd     = "machines.add"
	OpMachinesRemove  = "machines.rm"
	OpMachinesLabel   = "machines.label"
	OpMachinesImport  = "machines.import"
	OpOperatorsList   = "operators.list"
	OpOperatorsAdd    = "operators.add"
	OpOperatorsRemove = "operators.rm"
	// OpPresenceSnapshot answers a [PresenceSnapshot] (in parts, like
	// [PresenceSnapshotSubject]) to the operator the subject names, within
	// that operator's snapshot limit.
	OpPresenceSnapshot = "presence.snapshot"
)

// ReadOnlyOps are the control operations a viewer may use.
var ReadOnlyOps = map[string]bool{
	OpWhoAmI: true, OpMachinesList: true, OpMachinesPending: true, OpOperatorsList: true,
	OpHistory: true, OpMachinesDenied: true,
	OpVersion: true,
}

// WhoAmI answers [OpWhoAmI].
type WhoAmI struct {
	Operator string `json:"operator"`
	Role     string `json:"role"`
	// Key is the operator's public nkey (its inbox is OperatorInbox(Key)).
	Key string `json:"key"`
}

// MachineRequest is the body of machines.accept, machines.add,
// machines.rm and machines.label. Labels is used by add and label; Remove
// (label keys to drop) by label only.
//
// Key is a machine's PUBLIC nkey (U…; the CLI's --pubkey; the wire name
// stays "key"). add needs it in full. accept takes it, or a unique prefix
// of one of the keys that tried the id, to bind the key the operator
// reviewed; without it accept is refused when the id was tried with more
// than one key. Replace lets add give an already registered id another
// key (its live connections are closed).
type MachineRequest struct {
	ID      string            `json:"id"`
	Key     string            `json:"key,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Remove  []string          `json:"remove,omitempty"`
	Replace bool              `json:"replace,omitempty"`
	// Site places the machine at a remote site (add, accept, import).
	Site string `json:"site,omitempty"`
	// NoReplace makes accept refuse an id that is registered already: a
	// bulk accept (cc-bench machines accept --all-pending) takes only
	// new machines and never gives a registered one another key.
	NoReplace bool `json:"no_replace,omitempty"`
}

// MachineChange answers machines.accept and machines.add: the registry
// entry, and when the id was registered with another key before, that key
// (ReplacedKey) and how many of its live connections were closed.
type MachineChange struct {
	Machine
	ReplacedKey string `json:"replaced_key,omitempty"`
	Closed      int    `json:"closed,omitempty"`
}

// ListRequest pages a list (machines.list, machines.pending,
// operators.list): the entries sorted after After (an id or a name; ""
// from the start), at most Limit of them (0: the service's default). A
// reply holds fewer when they would not fit in one message; its Next is
// the After of the following page, "" on the last page. An empty body
// asks for the first page.
type ListRequest struct {
	After string `json:"after,omitempty"`
	Limit int    `json:"limit,omitempty"`
}

// ListPage is the paging part of a list reply: Total entries in all, and
// Next, the After of the following page ("" when this is the last).
type ListPage struct {
	Total int    `json:"total"`
	Next  string `json:"next,omitempty"`
}

// MaxListLimit is the largest Limit a list request may ask for.
const MaxListLimit = 10000

// MachineList answers machines.list (one page).
type MachineList struct {
	Machines []Machine `json:"machines"`
	ListPage
}

// PendingList answers machines.pending (one page).
type PendingList struct {
	Pending []Pending `json:"pending"`
	ListPage
}

// RemoveResult answers machines.rm and operators.rm: Closed counts the live
// connections the broker was told to close.
type RemoveResult struct {
	ID     string `json:"id"`
	Closed int    `json:"closed"`
}

// OperatorRequest is the body of operators.add and operators.rm. Key is
// the operator's PUBLIC nkey (the CLI's --pubkey; the wire name stays
// "key").
type OperatorRequest struct {
	Name string `json:"name"`
	Key  string `json:"key,omitempty"`
	Role string `json:"role,omitempty"`
	// Sessions grants a viewer the sessions permission.
	Sessions bool `json:"sessions,omitempty"`
}

// OperatorList answers operators.list (one page).
type OperatorList struct {
	Operators []Operator `json:"operators"`
	ListPage
}

// MachineImport is the body of machines.import: many machines registered
// in one registry write (a swarm, or a fleet migrated from elsewhere).
// Existing entries with the same id are replaced.
type MachineImport struct {
	Machines []MachineRequest `json:"machines"`
}

// ImportResult answers machines.import: Replaced counts the machines
// that were registered with another key before (their live connections,
// Closed in all, were closed).
type ImportResult struct {
	Added    int `json:"added"`
	Replaced int `json:"replaced,omitempty"`
	Closed   int `json:"closed,omitempty"`
}

// AgentHint is what the control service tells every agent on
// [AgentHintSubject], when it changes and once a minute.
type AgentHint struct {
	// ReconnectWindowMS spreads a fleet's reconnection: after losing the
	// broker, an agent makes its first attempt at a uniformly random
	// moment within this many milliseconds, so a whole fleet coming back
	// after a broker restart arrives at a rate the auth callout can serve
	// instead of all at once. The control service sizes it from the
	// number of machines ONLINE and the authorisation rate it is
	// configured for.
	ReconnectWindowMS int64 `json:"reconnect_window_ms"`
	// Online is the number of machines ONLINE when the hint was sent.
	Online int `json:"online"`
}
