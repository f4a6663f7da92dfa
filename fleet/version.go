package fleet

import "time"

// OpVersion answers the control service's build ([ControlVersion]) to any
// operator, a viewer too (it is in [ReadOnlyOps]). The request body is
// empty. With several replicas of the service one of them answers (they
// share the control API's queue group), naming itself in Replica.
const OpVersion = "version"

// ControlVersion answers [OpVersion]: which build of cc-control the
// answering replica runs, and since when.
type ControlVersion struct {
	// Version is the module version (v1.2.3, a pseudo-version) or
	// "devel" for a build that carries none.
	Version string `json:"version"`
	// Commit is the commit it was built from, "" when unknown; Modified
	// says the working tree had changes the commit does not hold.
	Commit   string `json:"commit,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	// Go is the toolchain that built it (go1.26.8).
	Go string `json:"go"`
	// Replica is the answering replica's name (cc-control
	// --replica-name).
	Replica string `json:"replica,omitempty"`
	// Started is when the replica started serving the control API.
	Started time.Time `json:"started"`
}
