package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

// Reply headers an agent sets besides [HeaderMachine] and the error
// headers, so an observer of replies alone (the control service's call
// watcher, a script) knows what was called and how long it took.
const (
	// HeaderFunction names the function a reply answers.
	HeaderFunction = "Cc-Function"
	// HeaderDuration is how long the agent took to answer, in seconds as
	// a decimal number ("0.0012").
	HeaderDuration = "Cc-Duration"
)

// HeaderCallID is a request header: the caller's id for one call. A caller
// that re-sends a call to machines that have not answered yet (the
// workbench does, see bench.Client.Stream) sends every copy with the same
// id, and an agent runs a call id at most once, answering only the first
// copy that reaches it. It must be the call token of the reply subject
// (see [CheckCallID]); an agent refuses any other (400), and echoes it in
// its answer so the audit matches the answer to the call it answers.
// Calls without it (a hand-made `nats req`) are run as they come.
const HeaderCallID = "Cc-Call"

// HeaderArgs is an answer header: [ArgsDigest] of the arguments the agent
// ran the call with. Calls under one id or one reply subject may differ
// in their arguments (a caller chooses both), so the audit credits an
// answer to the call whose arguments it names, never by the order of
// answers.
const HeaderArgs = "Cc-Args"

// ArgsDigest names a call's arguments (its request body) in [HeaderArgs]
// and in the audit: half a SHA-256 in hex and the length, so no caller
// can find other arguments that share it.
func ArgsDigest(body []byte) string {
	h := sha256.Sum256(body)
	return hex.EncodeToString(h[:16]) + ":" + strconv.Itoa(len(body))
}

// MaxCallIDLen bounds a call id; an agent refuses a longer one (400), so
// the ids it remembers take bounded memory.
const MaxCallIDLen = 64

// The NATS status headers a broker sets on a "no responders" answer (a
// request nobody serves): an empty body with Status 503. The control
// service sends the same for a call to a machine that is not ONLINE.
const (
	HeaderStatus            = "Status"
	HeaderDescription       = "Description"
	StatusNoResponders      = "503"
	DescriptionNoResponders = "No Responders"
)

// IsNoResponders reports whether a reply with Status header status and a
// body of bodyLen bytes is a "no responders" answer.
func IsNoResponders(status string, bodyLen int) bool {
	return status == StatusNoResponders && bodyLen == 0
}
