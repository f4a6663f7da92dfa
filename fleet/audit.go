package fleet

import (
	"encoding/json"
	"time"
)

// OpAudit reads the audit log (admin only): request [AuditRequest], reply
// [AuditList].
const OpAudit = "audit"

// Audit record kinds.
const (
	// AuditCall is a function call an operator made, with its outcome
	// per target.
	AuditCall = "call"
	// AuditRegistry is a change to the registry or the operators made
	// through the control API (or refused).
	AuditRegistry = "registry"
	// AuditRefused is a connection the auth callout refused.
	AuditRefused = "refused"
	// AuditDropped notes that records were lost (the writer fell behind).
	AuditDropped = "dropped"
)

// Outcome statuses of one target of an audited call.
const (
	OutcomeOK         = "ok"
	OutcomeError      = "error"
	OutcomeNoResponse = "no-response"
	// OutcomeUntracked: the call was recorded before this target's
	// answer was in (its operator, or everyone, had too many calls
	// open): whether it ran is not known.
	OutcomeUntracked = "untracked"
)

// The audit is kept in three logs, each with its own retention (size and
// age), so that records of one kind cannot evict another's: the changes
// (registry and operator changes made through the control API, and the
// notes of records lost), the refused (connections the callout refused
// and control operations refused), and the calls.
const (
	AuditLogChanges = "changes"
	AuditLogRefused = "refused"
	AuditLogCalls   = "calls"
)

// AuditLogs lists the audit logs.
var AuditLogs = []string{AuditLogChanges, AuditLogRefused, AuditLogCalls}

// AuditRequest is the body of [OpAudit]: records at or after Since (zero:
// from the start) of the logs named in Logs (empty: all), after the
// positions in After (the previous page's [AuditList.Next]), at most Limit
// of them.
//
// With Newest the reply holds the newest Limit records instead (After is
// ignored), still oldest first; its More then says that older records
// match, and it has no Next.
type AuditRequest struct {
	Since  time.Time         `json:"since,omitzero"`
	Logs   []string          `json:"logs,omitempty"`
	After  map[string]uint64 `json:"after,omitempty"`
	Limit  int               `json:"limit,omitempty"`
	Newest bool              `json:"newest,omitempty"`
}

// AuditList answers [OpAudit], the logs merged oldest first. More is set
// when further records match: ask again with the same Since and Logs and
// After set to Next.
type AuditList struct {
	Records []AuditRecord     `json:"records"`
	More    bool              `json:"more,omitempty"`
	Next    map[string]uint64 `json:"next,omitempty"`
}

// AuditRecord is one entry of the audit log.
type AuditRecord struct {
	// Log and Seq are the record's log and its position there (set when
	// read back).
	Log  string    `json:"log,omitempty"`
	Seq  uint64    `json:"seq,omitempty"`
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`
	// Operator and OperatorKey name who acted. For a call they are the
	// owner of the inbox the replies were sent to (see SECURITY.md).
	Operator    string `json:"operator,omitempty"`
	OperatorKey string `json:"operator_key,omitempty"`

	// Call: the function, the subject it was sent on, the arguments
	// (truncated to [AuditMaxCallArgs] bytes), whether it was a broadcast,
	// and the outcome per target. A call to more than
	// [AuditMaxOutcomes] targets is recorded in several parts.
	Function  string          `json:"function,omitempty"`
	Subject   string          `json:"subject,omitempty"`
	Args      json.RawMessage `json:"args,omitempty"`
	Broadcast bool            `json:"broadcast,omitempty"`
	Part      int             `json:"part,omitempty"`
	Parts     int             `json:"parts,omitempty"`
	Targets   int             `json:"targets,omitempty"`
	OK        int             `json:"ok,omitempty"`
	Errors    int             `json:"errors,omitempty"`
	NoResp    int             `json:"no_response,omitempty"`
	Outcomes  []AuditOutcome  `json:"outcomes,omitempty"`

	// Registry: the control operation and its request body.
	Op      string          `json:"op,omitempty"`
	Request json.RawMessage `json:"request,omitempty"`
	// Note says what a registry change did beyond its request, e.g. that
	// it replaced a machine's key and closed the old key's connections.
	Note string `json:"note,omitempty"`

	// Refused connection: the name presented, the key, the address and why.
	Name   string `json:"name,omitempty"`
	Key    string `json:"key,omitempty"`
	IP     string `json:"ip,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Site is the remote site whose broker asked about the refused
	// connection ("": the hub's own brokers): Name, Key and IP are then
	// as that site reported them.
	Site string `json:"site,omitempty"`
	// Count folds repeated refusals: this record stands for Count
	// refusals of the same name, key, site and reason (0 means one),
	// from FirstAt to Time; IP is the last one's.
	Count   int       `json:"count,omitempty"`
	FirstAt time.Time `json:"first_at,omitzero"`

	// Cut: Args (of a call) or Request (of a registry change) was
	// truncated; the whole was Size bytes with this SHA-256 (hex).
	Cut *AuditCut `json:"cut,omitempty"`

	// Error is why a registry change failed ("" when it succeeded).
	Error string `json:"error,omitempty"`
	// Dropped (kind dropped) counts records that were lost: of kind
	// DroppedKind, of Operator (when known), from DroppedSince to Time;
	// Reason says why.
	Dropped      int       `json:"dropped,omitempty"`
	DroppedKind  string    `json:"dropped_kind,omitempty"`
	DroppedSince time.Time `json:"dropped_since,omitzero"`
}

// AuditCut describes a body the audit record holds only the start of.
type AuditCut struct {
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
}

// AuditOutcome is what one target of a call answered.
type AuditOutcome struct {
	Machine string `json:"machine"`
	Status  string `json:"status"`
	Code    int    `json:"code,omitempty"`
	Error   string `json:"error,omitempty"`
	// DurationMS is the time from the request to the reply.
	DurationMS int64 `json:"duration_ms,omitempty"`
}

// Audit limits: what one record may hold.
const (
	// AuditMaxArgs bounds a registry change's request body,
	// AuditMaxCallArgs a call's arguments: longer ones are cut, with
	// their size and hash kept ([AuditCut]).
	AuditMaxArgs     = 4096
	AuditMaxCallArgs = 1024
	AuditMaxOutcomes = 500
	// AuditMaxClientText bounds what a refused connection chose itself
	// (its name, the key it presented): longer text is cut at a character
	// boundary and ends in "…(N bytes)", N its whole length.
	AuditMaxClientText = 128
)
