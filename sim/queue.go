package sim

import "container/heap"

// eventQueue orders pending events by virtual time, then by the order they
// were scheduled, so that two events at one instant always run in the same
// order.
type eventQueue struct {
	items []*event
	seq   uint64
}

func (q *eventQueue) Len() int { return len(q.items) }
func (q *eventQueue) Less(i, j int) bool {
	a, b := q.items[i], q.items[j]
	if a.at != b.at {
		return a.at < b.at
	}
	return a.seq < b.seq
}
func (q *eventQueue) Swap(i, j int) { q.items[i], q.items[j] = q.items[j], q.items[i] }
func (q *eventQueue) Push(x any)    { q.items = append(q.items, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := q.items
	e := old[len(old)-1]
	old[len(old)-1] = nil
	q.items = old[:len(old)-1]
	return e
}

func (q *eventQueue) schedule(e *event) {
	q.seq++
	e.seq = q.seq
	heap.Push(q, e)
}

func (q *eventQueue) next() *event {
	if len(q.items) == 0 {
		return nil
	}
	return heap.Pop(q).(*event)
}

// eventsPendingMax bounds the queue: a run that schedules more than this is
// broken (a feedback loop), and says so rather than eating the machine.
const eventsPendingMax = 4 << 20
