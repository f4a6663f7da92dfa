package bench

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// StatusNotCalled is the status [Client.CallBatches] reports for a
// selected machine it did not call: the call stopped at a failed batch
// (or ended) before the machine's batch.
const StatusNotCalled Status = "not-called"

// Batch makes a call go to its machines in batches, as Salt's
// --batch-size and Choria's --batch do: for a function that changes
// things, a fault shows on a few machines before it reaches them all.
// The machines are selected once; each batch is called and completed
// (every machine answered, or the timeout passed) before the next one
// starts, Wait after it.
type Batch struct {
	// Size is how many machines one batch calls; when 0, Percent of the
	// machines selected, rounded down, and at least 1.
	Size    int
	Percent float64
	// Wait is the pause between a batch's end and the next batch.
	Wait time.Duration
	// Continue goes on after a batch in which a machine answered an
	// error or did not answer. Without it the call stops there, and the
	// machines of the batches left are reported [StatusNotCalled].
	Continue bool
	// Started, when set, is called before each batch with its number
	// (from 1), the number of batches and the machines it calls.
	Started func(n, batches int, machines []string)
	// Finished, when set, is called after each batch with its summary.
	Finished func(n, batches int, sum *Summary)
}

// ParseBatch reads a batch size as given on a command line: a number of
// machines ("5") or a percentage of those selected ("10%").
func ParseBatch(s string) (Batch, error) {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || !percentOK(f) {
			return Batch{}, fmt.Errorf("batch size %q: want a percentage above 0 and at most 100, e.g. 10%%", s)
		}
		return Batch{Percent: f}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return Batch{}, fmt.Errorf("batch size %q: want a number of machines (at least 1) or a percentage, e.g. 5 or 10%%", s)
	}
	return Batch{Size: n}, nil
}

// percentOK reports whether f is a batch percentage: above 0 and at
// most 100. NaN fails both comparisons, so it is refused by name.
func percentOK(f float64) bool {
	return !math.IsNaN(f) && f > 0 && f <= 100
}

// size is the number of machines per batch for a selection of n.
func (b *Batch) size(n int) int {
	if b.Size > 0 {
		return b.Size
	}
	return max(1, int(math.Floor(float64(n)*b.Percent/100+1e-9)))
}

func (b *Batch) validate() error {
	switch {
	case b.Size < 0:
		return fmt.Errorf("batch size %d: want at least 1", b.Size)
	case b.Size == 0 && !percentOK(b.Percent):
		return fmt.Errorf("batch size %v%%: want a percentage above 0 and at most 100", b.Percent)
	case b.Wait < 0:
		return fmt.Errorf("batch wait %s: want 0 or more", b.Wait)
	}
	return nil
}

// batchSleep waits d, or until ctx ends; tests replace it.
var batchSleep = func(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// CallBatches calls fn with args on the machines opts selects, b's
// batch at a time: the selection is made once (opts.Where over the
// presence snapshot, or opts.Machines), sorted by id, and cut into
// batches; each batch runs as [Client.Stream] with its machines named
// (so it ends when they have all answered, or at opts.Timeout), and
// each reply goes to each. After a batch in which a machine answered an
// error or did not answer, the call stops unless b.Continue: each
// machine left gets a [StatusNotCalled] reply, and the summary lists
// them in NotCalled (so it is not AllOK). A call to sessions cannot be
// batched.
//
// The summary adds up the batches': Expected is every machine selected.
// When ctx ends (during a batch or a wait), CallBatches reports the
// machines left as not called and returns the summary and ctx.Err().
func (c *Client) CallBatches(ctx context.Context, fn string, args map[string]any, opts CallOptions, b Batch, each func(Reply)) (*Summary, error) {
	if opts.Sessions != nil {
		return nil, fmt.Errorf("call %s: a call to sessions cannot be made in batches", fn)
	}
	if err := fleet.ValidateName("function name", fn); err != nil {
		return nil, err
	}
	if err := b.validate(); err != nil {
		return nil, fmt.Errorf("call %s: %w", fn, err)
	}
	targets, _, hint, err := c.targets(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("call %s: %w", fn, err)
	}
	start := time.Now()
	total := &Summary{Function: fn, Expected: len(targets)}
	size := b.size(len(targets))
	batches := (len(targets) + size - 1) / size
	if batches == 0 {
		if opts.Published != nil {
			opts.Published(0)
		}
		return total, fmt.Errorf("call %s: %w", fn, noMatch(opts, hint))
	}
	notCalled := func(from int) {
		for _, id := range targets[from:] {
			total.NotCalled = append(total.NotCalled, id)
			each(Reply{Machine: id, Status: StatusNotCalled})
		}
	}
	for n := range batches {
		from := n * size
		if n > 0 && b.Wait > 0 {
			if err := batchSleep(ctx, b.Wait); err != nil {
				notCalled(from)
				total.Took = time.Since(start)
				return total, err
			}
		}
		machines := targets[from:min(from+size, len(targets))]
		if b.Started != nil {
			b.Started(n+1, batches, machines)
		}
		one := opts
		one.Where, one.Machines = Selector{}, machines
		sum, err := c.Stream(ctx, fn, args, one, each)
		if sum == nil {
			notCalled(from)
			total.Took = time.Since(start)
			return total, err
		}
		total.add(sum)
		if b.Finished != nil {
			b.Finished(n+1, batches, sum)
		}
		if err != nil || (!sum.AllOK() && !b.Continue) {
			notCalled(from + len(machines))
			total.Took = time.Since(start)
			return total, err
		}
	}
	total.Took = time.Since(start)
	return total, nil
}

// add counts one batch's outcome into s.
func (s *Summary) add(b *Summary) {
	s.NumOK += b.NumOK
	s.NumError += b.NumError
	s.NumUnexpected += b.NumUnexpected
	s.NoResponse = append(s.NoResponse, b.NoResponse...)
	s.Duplicates += b.Duplicates
	s.Resent += b.Resent
	s.TimedOut = s.TimedOut || b.TimedOut
}
