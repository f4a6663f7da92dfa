package agent

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Per-caller limits. The caller of a call is the operator key its subject
// ends with, which the broker lets only that operator publish, so one
// operator cannot spend another's share.
const (
	// DefaultCallerRate is how many calls per second one operator may
	// start on one agent, sustained (a token bucket refilled at this rate).
	DefaultCallerRate = 50
	// DefaultCallerBurst is how many calls one operator may start on one
	// agent at once, above the rate.
	DefaultCallerBurst = 200
	// RefusalAnswerRate and RefusalAnswerBurst bound the refusals (429
	// over the rate, 503 over the share) one operator is answered by one
	// agent, per second sustained and at once;
	// past them a refused call is dropped without a reply (counted, see
	// [Agent.RefusalsDropped]). A flood of broadcasts so costs each agent
	// a map lookup per call, not a reply: a fleet of N agents would
	// otherwise turn every refused broadcast into N replies. A caller that
	// hears nothing treats the agent as not answering, as for any lost
	// reply; the refusals it is answered tell it to slow down. A 503 for
	// an agent full of other operators' calls, while this one is within
	// its share, is not one of these: it is always answered (bounded by
	// the caller's rate), so others cannot turn "busy" into silence.
	RefusalAnswerRate  = 2
	RefusalAnswerBurst = 10
	// maxTrackedCallers bounds the per-caller state an agent keeps; idle
	// callers are forgotten first.
	maxTrackedCallers = 1024
)

// callerShare is one caller's state: its token bucket and its calls
// holding a slot.
type callerShare struct {
	tokens  float64
	last    time.Time
	running int
	// answers is the refusals left to answer (RefusalAnswerBurst at
	// most), refilled at RefusalAnswerRate since answered.
	answers  float64
	answered time.Time
}

// fairShare gives each caller its own rate limit and at most half of the
// agent's call slots (at least one), so a flood from one operator is
// refused 429/503 while another operator's calls still run.
type fairShare struct {
	mu       sync.Mutex
	rate     float64 // tokens per second; <= 0: unlimited
	burst    float64
	perCall  int // slots one caller may hold
	now      func() time.Time
	callers  map[string]*callerShare
	totalCap int
	// dropped counts refusals not answered (over the refusal budget).
	dropped atomic.Int64
}

func newFairShare(rate, burst float64, maxConcurrent int, now func() time.Time) *fairShare {
	if now == nil {
		now = time.Now
	}
	if burst < 1 {
		burst = max(1, rate)
	}
	return &fairShare{rate: rate, burst: burst, perCall: max(1, maxConcurrent/2), now: now,
		callers: map[string]*callerShare{}, totalCap: maxConcurrent}
}

// share returns caller's state, creating it (and forgetting an idle
// caller when the map is full).
func (f *fairShare) share(caller string, now time.Time) *callerShare {
	if s := f.callers[caller]; s != nil {
		return s
	}
	if len(f.callers) >= maxTrackedCallers {
		for k, s := range f.callers {
			if s.running == 0 {
				delete(f.callers, k)
				break
			}
		}
	}
	s := &callerShare{tokens: f.burst, last: now, answers: RefusalAnswerBurst, answered: now}
	f.callers[caller] = s
	return s
}

// admit takes one token of caller's rate, or returns a 429 error.
func (f *fairShare) admit(caller string) error {
	if f.rate <= 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	s := f.share(caller, now)
	if el := now.Sub(s.last).Seconds(); el > 0 {
		s.tokens = min(f.burst, s.tokens+el*f.rate)
	}
	s.last = now
	if s.tokens < 1 {
		return fleet.Errorf(fleet.CodeTooManyRequests, "operator %s is over its rate on this agent (%g calls/s, bursts of %g); slow down and retry", short(caller), f.rate, f.burst)
	}
	s.tokens--
	return nil
}

// hold takes one of caller's slots, or reports that caller holds its
// share already.
func (f *fairShare) hold(caller string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.share(caller, f.now())
	if s.running >= f.perCall {
		return false
	}
	s.running++
	return true
}

// answer reports whether a refusal to caller is to be answered, taking
// one of its refusal answers; false (counted in dropped): drop the call
// without a reply.
func (f *fairShare) answer(caller string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	s := f.share(caller, now)
	if el := now.Sub(s.answered).Seconds(); el > 0 {
		s.answers = min(RefusalAnswerBurst, s.answers+el*RefusalAnswerRate)
	}
	s.answered = now
	if s.answers < 1 {
		f.dropped.Add(1)
		return false
	}
	s.answers--
	return true
}

// release gives back a slot taken by hold.
func (f *fairShare) release(caller string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.callers[caller]; s != nil && s.running > 0 {
		s.running--
	}
}

func short(key string) string {
	if len(key) > 12 {
		return key[:12] + "…"
	}
	return key
}
