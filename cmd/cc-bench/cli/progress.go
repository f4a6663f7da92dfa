package cli

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/commandcontrol/commandcontrol/bench"
)

// progressDelay is how long a call runs before progress is shown.
const progressDelay = 500 * time.Millisecond

// progress shows "replies/expected" on a terminal's stderr while a call
// runs longer than progressDelay. Its zero value (not a terminal) does
// nothing.
type progress struct {
	w        io.Writer
	replies  atomic.Int64
	expected atomic.Int64
	done     chan struct{}
	wg       sync.WaitGroup
	shown    atomic.Bool
}

func startProgress(w io.Writer, timeout time.Duration) *progress {
	p := &progress{}
	p.expected.Store(-1)
	if !isTerminal(w) {
		return p
	}
	p.w, p.done = w, make(chan struct{})
	p.wg.Add(1)
	go p.loop(timeout)
	return p
}

func (p *progress) loop(timeout time.Duration) {
	defer p.wg.Done()
	start := time.Now()
	select {
	case <-p.done:
		return
	case <-time.After(progressDelay):
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		p.shown.Store(true)
		left := max(timeout-time.Since(start), 0).Seconds()
		if n := p.expected.Load(); n >= 0 {
			fmt.Fprintf(p.w, "\r\033[K%d/%d replies, %.1fs left", p.replies.Load(), n, left)
		} else {
			fmt.Fprintf(p.w, "\r\033[Kwaiting for the presence list, %.1fs left", left)
		}
		select {
		case <-p.done:
			return
		case <-tick.C:
		}
	}
}

// published records how many machines are expected.
func (p *progress) published(n int) { p.expected.Store(int64(n)) }

// reply counts an answer from an expected machine.
func (p *progress) reply(r bench.Reply) {
	if r.Status != bench.StatusNoResponse && !r.Unexpected {
		p.replies.Add(1)
	}
}

// stop ends the display and clears its line.
func (p *progress) stop(*bench.Summary) {
	if p.done == nil {
		return
	}
	close(p.done)
	p.wg.Wait()
	if p.shown.Load() {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
