package agent

import (
	"errors"
	"testing"
	"time"

	"github.com/commandcontrol/commandcontrol/fleet"
)

func TestFairShareRate(t *testing.T) {
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	f := newFairShare(2, 3, 8, func() time.Time { return now })
	for i := range 3 {
		if err := f.admit("A"); err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	var fe *fleet.Error
	if err := f.admit("A"); !errors.As(err, &fe) || fe.Code != fleet.CodeTooManyRequests {
		t.Fatalf("past the burst: got %v, want 429", err)
	}
	if err := f.admit("B"); err != nil {
		t.Fatalf("another caller: %v", err)
	}
	now = now.Add(500 * time.Millisecond) // one token back at 2/s
	if err := f.admit("A"); err != nil {
		t.Fatalf("after the refill: %v", err)
	}
	if err := f.admit("A"); err == nil {
		t.Fatal("a second call after one token came back")
	}
	now = now.Add(time.Hour) // refills only up to the burst
	for i := range 3 {
		if err := f.admit("A"); err != nil {
			t.Fatalf("call %d after an hour: %v", i, err)
		}
	}
	if err := f.admit("A"); err == nil {
		t.Fatal("the bucket grew past its burst")
	}
}

func TestFairShareSlots(t *testing.T) {
	f := newFairShare(-1, 0, 4, nil)
	for i := range 2 {
		if !f.hold("A") {
			t.Fatalf("A's slot %d refused", i+1)
		}
	}
	if f.hold("A") {
		t.Fatal("A got more than half the slots")
	}
	if !f.hold("B") {
		t.Fatal("B refused while A holds its share")
	}
	f.release("A")
	if !f.hold("A") {
		t.Fatal("A refused after releasing a slot")
	}
	if err := f.admit("A"); err != nil {
		t.Fatalf("unlimited rate: %v", err)
	}
}

// TestFairShareRefusalAnswers: a caller's refusals are answered up to
// RefusalAnswerBurst at once and RefusalAnswerRate a second; the rest are
// dropped and counted, and another caller has its own answers.
func TestFairShareRefusalAnswers(t *testing.T) {
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	f := newFairShare(1, 1, 8, func() time.Time { return now })
	answered := 0
	for range 1000 {
		if f.answer("A") {
			answered++
		}
	}
	if answered != RefusalAnswerBurst || f.dropped.Load() != 1000-RefusalAnswerBurst {
		t.Fatalf("1000 refusals at once: %d answered, %d dropped; want %d answered", answered, f.dropped.Load(), RefusalAnswerBurst)
	}
	if !f.answer("B") {
		t.Fatal("another caller's refusal dropped")
	}
	now = now.Add(time.Second / RefusalAnswerRate) // one answer back
	if !f.answer("A") {
		t.Fatal("no answer after the refill")
	}
	if f.answer("A") {
		t.Fatal("two answers after one came back")
	}
	now = now.Add(time.Hour) // refills only up to the burst
	answered = 0
	for range 100 {
		if f.answer("A") {
			answered++
		}
	}
	if answered != RefusalAnswerBurst {
		t.Fatalf("after an hour: %d answered, want %d", answered, RefusalAnswerBurst)
	}
}
