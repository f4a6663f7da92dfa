package bench

import (
	"context"
	"time"
)

// SetFirstResend sets the bound on the delay before a call's first
// re-send and returns a function that restores it.
func SetFirstResend(d time.Duration) (restore func()) {
	old := resendFirstMax
	resendFirstMax = d
	return func() { resendFirstMax = old }
}

// SetWatchPendingBytes sets how many bytes of events a watch holds unread
// before it drops them, and returns a function that restores it.
func SetWatchPendingBytes(n int) (restore func()) {
	old := watchPendingBytes
	watchPendingBytes = n
	return func() { watchPendingBytes = old }
}

// SetBatchSleep replaces the wait between batches and returns a function
// that restores it.
func SetBatchSleep(f func(ctx context.Context, d time.Duration) error) (restore func()) {
	old := batchSleep
	batchSleep = f
	return func() { batchSleep = old }
}

// OnlineIDs is what a call to every ONLINE machine asks for.
func (c *Client) OnlineIDs(ctx context.Context) ([]string, error) { return c.onlineIDs(ctx) }
