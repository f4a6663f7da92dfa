package fleet

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
