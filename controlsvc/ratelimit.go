package controlsvc

import (
	"cmp"
	"math"
	"sync"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

// Per-operator request limits: each operator key has a token bucket per
// kind of request, refilled at the rate and holding at most the burst.
// They bound what one operator (a flood, a runaway script, a stolen
// viewer key) can make the control service do; another operator's
// requests use its own buckets and are answered as before.
const (
	// DefaultSnapshotRate is Config.SnapshotRate's default: presence
	// snapshot parts per second one operator may ask for, sustained (a
	// snapshot of up to fleet.SnapshotChunk machines is one part, so on
	// most fleets this counts snapshots; on a fleet of 60,000 one costs
	// 30). Every `cc-bench servers`, `call` and `watch` starts with one.
	// The same as an agent's per-caller call rate (agent.DefaultCallerRate).
	DefaultSnapshotRate = 50.0
	// DefaultSnapshotBurst is Config.SnapshotBurst's default.
	DefaultSnapshotBurst = 200
	// DefaultControlRate is Config.ControlRate's default: control API
	// requests per second one operator may make, sustained (a listing is
	// one request per page: reading 1,100 audit pages takes a second).
	DefaultControlRate = 200.0
	// DefaultControlBurst is Config.ControlBurst's default.
	DefaultControlBurst = 1000
)

// opLimiter is one kind of request's token buckets, one per operator key.
// Keys are registered operators only (callers check), so the map is as
// large as the operator list at most.
type opLimiter struct {
	kind, flag string // "presence snapshot", "snapshot" (for --snapshot-rate)
	rate       float64
	burst      float64
	now        func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket

	// whose says whose limit it is in refusals: "" for "this operator".
	whose string
}

type bucket struct {
	tokens float64
	// answers is the refusals left to answer: refilled at the same rate,
	// up to the burst. Past them a refusal is dropped unanswered, so a
	// flood costs the service a map lookup per request, not a reply.
	answers float64
	last    time.Time
	// refused counts refusals since the last log line about this key.
	refused int
	logged  time.Time
}

// newOpLimiter returns a limiter, or nil (no limit) when rate is negative.
func newOpLimiter(kind, flag string, rate float64, burst int, now func() time.Time) *opLimiter {
	if rate < 0 {
		return nil
	}
	return &opLimiter{kind: kind, flag: flag, rate: rate, burst: float64(max(burst, 1)), now: now, buckets: map[string]*bucket{}}
}

// limitLogEvery spaces the log lines about one operator being refused.
const limitLogEvery = 10 * time.Second

// limitRefusal says what to do with a refused request: answer it with Err
// (the 429 saying the limit and when to retry) when Answer is set, else
// drop it; log it when Log is set (the first refusal, then at most every
// limitLogEvery), with Count the refusals since the last log line.
type limitRefusal struct {
	Err    *fleet.Error
	Wait   time.Duration // until the request would be let through
	Answer bool
	Log    bool
	Count  int
}

// allow takes a token from key's bucket, or returns what to do with the
// refused request.
func (l *opLimiter) allow(key string) *limitRefusal { return l.allowN(key, 1) }

// bucketAt is key's bucket, refilled until now (l.mu held).
func (l *opLimiter) bucketAt(key string, now time.Time) *bucket {
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, answers: l.burst, last: now}
		l.buckets[key] = b
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = math.Min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.answers = math.Min(l.burst, b.answers+d.Seconds()*l.rate)
		b.last = now
	}
	return b
}

// charge takes cost more tokens from key's bucket for a request already
// admitted that cost more than the token it paid (a history page that
// read many entries): the bucket may go into debt, down to minus the
// burst, and key's next requests wait until it has refilled.
func (l *opLimiter) charge(key string, cost int) {
	if l == nil || cost <= 0 {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketAt(key, now)
	b.tokens = math.Max(-l.burst, b.tokens-float64(cost))
}

// allowN takes cost tokens (at most the burst) from key's bucket, or
// returns what to do with the refused request.
func (l *opLimiter) allowN(key string, cost int) *limitRefusal {
	if l == nil {
		return nil
	}
	need := math.Min(float64(max(cost, 1)), l.burst)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketAt(key, now)
	if b.tokens >= need {
		b.tokens -= need
		return nil
	}
	r := &limitRefusal{}
	if b.answers >= 1 {
		b.answers--
		r.Answer = true
	}
	b.refused++
	if b.logged.IsZero() || now.Sub(b.logged) >= limitLogEvery {
		r.Log, r.Count = true, b.refused
		b.logged, b.refused = now, 0
	}
	if !r.Answer && !r.Log {
		return r // dropped: no message to build
	}
	wait := time.Second
	if l.rate > 0 {
		wait = time.Duration((need - b.tokens) / l.rate * float64(time.Second)).Round(time.Millisecond)
	}
	r.Wait = max(wait, time.Millisecond)
	r.Err = fleet.Errorf(fleet.CodeTooManyRequests,
		"over the %s limit %s (%g per second, bursts of %g; cc-control --%s-rate and --%s-burst set it): retry in %v",
		l.kind, cmp.Or(l.whose, "of this operator"), l.rate, l.burst, l.flag, l.flag, r.Wait)
	return r
}
