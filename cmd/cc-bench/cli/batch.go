package cli

import (
	"strings"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
)

// batchFlags are cc-bench call's --batch, --batch-wait and
// --batch-continue.
type batchFlags struct {
	size string
	wait time.Duration
	goOn bool
}

func (f *batchFlags) register(fs *flagSet) {
	fs.StringVar(&f.size, "batch", "", "call the machines selected `N` at a time, or N% of them, each batch after the previous one completed; stop at the first error or no response")
	fs.DurationVar(&f.wait, "batch-wait", 0, "with --batch: wait `D` between batches, e.g. 30s")
	fs.BoolVar(&f.goOn, "batch-continue", false, "with --batch: go on after a batch with an error or no response")
}

// parse returns the batch the flags ask for, or nil without --batch.
func (f *batchFlags) parse(sessions bool) (*bench.Batch, error) {
	switch {
	case f.size == "" && (f.wait != 0 || f.goOn):
		return nil, usageErrorf("--batch-wait and --batch-continue need --batch")
	case f.size == "":
		return nil, nil
	case sessions:
		return nil, usageErrorf("--batch calls machines; a call to sessions cannot be made in batches")
	case f.wait < 0:
		return nil, usageErrorf("--batch-wait %s: want 0 or more", f.wait)
	}
	b, err := bench.ParseBatch(f.size)
	if err != nil {
		return nil, usageErrorf("--batch: %v", err)
	}
	b.Wait, b.Continue = f.wait, f.goOn
	return &b, nil
}

// runCallBatches is cc-bench call --batch: the replies print as a call's
// do (machines not called are rows "not-called"); each batch's start,
// end and the wait before the next go to stderr.
func runCallBatches(e *env, fn string, args map[string]any, opts bench.CallOptions, filter *bench.Filter, view *callView, b bench.Batch) error {
	c, err := e.connect()
	if err != nil {
		return err
	}
	defer c.Close()
	out := &callOutput{e: e, filter: filter, check: filter.Check(), view: view}
	var perr error
	note := func(format string, args ...any) {
		if perr == nil {
			perr = printf(e.stderr, format, args...)
		}
	}
	b.Started = func(n, batches int, machines []string) {
		note("batch %d/%d: %d machine%s: %s\n", n, batches, len(machines), plural(len(machines)), strings.Join(machines, " "))
	}
	b.Finished = func(n, batches int, sum *bench.Summary) {
		note("batch %d/%d: %s (took %s)\n", n, batches, sum.String(), tookText(sum.Took))
		switch {
		case n == batches:
		case !sum.AllOK() && !b.Continue:
			note("stopping: batch %d/%d did not succeed everywhere; the machines of the %d later %s are not called (--batch-continue goes on)\n",
				n, batches, batches-n, batchWord(batches-n))
		case b.Wait > 0:
			note("waiting %s before batch %d/%d\n", b.Wait.String(), n+1, batches)
		}
	}
	sum, err := c.CallBatches(e.ctx, fn, args, opts, b, out.add)
	if sum == nil {
		return err
	}
	if perr != nil {
		return perr
	}
	return out.end(sum, err)
}

func batchWord(n int) string {
	if n == 1 {
		return "batch"
	}
	return "batches"
}
