package sim

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The queue hands events out by time, and events at one time in the order
// they were scheduled, however pushes and pops interleave.
func TestEventQueueOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var q eventQueue
	var pending []*event
	now := int64(0)
	for step := 0; step < 20000; step++ {
		if rng.IntN(3) > 0 || len(pending) == 0 {
			at := now + rng.Int64N(50)
			q.schedule(event{at: at, opSeq: uint64(step)})
			pending = append(pending, &event{at: at, seq: q.seq, opSeq: uint64(step)})
			continue
		}
		slices.SortStableFunc(pending, func(a, b *event) int {
			if a.at != b.at {
				return int(a.at - b.at)
			}
			return int(a.seq) - int(b.seq)
		})
		got := q.next()
		if got.opSeq != pending[0].opSeq || got.at != pending[0].at {
			t.Fatalf("step %d: got event at %d seq %d, want at %d seq %d", step, got.at, got.seq, pending[0].at, pending[0].seq)
		}
		pending = pending[1:]
		now = got.at
		q.release(got)
	}
	if q.Len() != len(pending) {
		t.Fatalf("queue holds %d, want %d", q.Len(), len(pending))
	}
}
