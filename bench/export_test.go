package bench

import "time"

// SetFirstResend sets the bound on the delay before a call's first
// re-send and returns a function that restores it.
func SetFirstResend(d time.Duration) (restore func()) {
	old := resendFirstMax
	resendFirstMax = d
	return func() { resendFirstMax = old }
}
