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
)

// AuditRequest is the body of [OpAudit]: records at or after Since (zero:
// from the start) and after sequence AfterSeq, at most Limit of them.
type AuditRequest struct {
	Since    time.Time `json:"since,omitzero"`
	AfterSeq uint64    `json:"after_seq,omitempty"`
	Limit    int       `json:"limit,omitempty"`
}

// AuditList answers [OpAudit], oldest first. More is set when further
// records match: ask again with AfterSeq set to the last record's Seq.
type AuditList struct {
	Records []AuditRecord `json:"records"`
	More    bool          `json:"more,omitempty"`
}

// AuditRecord is one entry of the audit log.
type AuditRecord struct {
	// Seq is the record's position in the log (set when read back).
	Seq  uint64    `json:"seq,omitempty"`
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`
	// Operator and OperatorKey name who acted. For a call they are the
	// owner of the inbox the replies were sent to (see SECURITY.md).
	Operator    string `json:"operator,omitempty"`
	OperatorKey string `json:"operator_key,omitempty"`

	// Call: the function, the subject it was sent on, the arguments
	// (truncated to [AuditMaxArgs] bytes), whether it was a broadcast,
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

	// Error is why a registry change failed ("" when it succeeded).
	Error string `json:"error,omitempty"`
	// Dropped counts records lost before this one.
	Dropped int `json:"dropped,omitempty"`
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
	AuditMaxArgs     = 4096
	AuditMaxOutcomes = 500
)
