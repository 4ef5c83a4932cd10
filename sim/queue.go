package sim

// eventQueue orders pending events by virtual time, then by the order they
// were scheduled, so that two events at one instant always run in the same
// order. It is a binary min-heap of (time, sequence) keys held by value
// beside their events: every step of a run pops one and pushes a few, so
// the comparisons read the keys without following a pointer, and no
// interface call stands between the heap and them.
type eventQueue struct {
	items []queued
	seq   uint64
	// free holds events already run, for reuse: a run schedules millions,
	// and nothing keeps an event once it has run.
	free []*event
}

type queued struct {
	at  int64
	seq uint64
	e   *event
}

func (a queued) before(b queued) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	return a.seq < b.seq
}

func (q *eventQueue) Len() int { return len(q.items) }

// schedule queues a copy of ev.
func (q *eventQueue) schedule(ev event) {
	var e *event
	if n := len(q.free); n > 0 {
		e, q.free = q.free[n-1], q.free[:n-1]
	} else {
		e = new(event)
	}
	*e = ev
	q.seq++
	e.seq = q.seq
	q.items = append(q.items, queued{at: e.at, seq: e.seq, e: e})
	// Sift up.
	i := len(q.items) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !q.items[i].before(q.items[parent]) {
			break
		}
		q.items[i], q.items[parent] = q.items[parent], q.items[i]
		i = parent
	}
}

func (q *eventQueue) next() *event {
	n := len(q.items)
	if n == 0 {
		return nil
	}
	top := q.items[0].e
	q.items[0] = q.items[n-1]
	q.items[n-1] = queued{}
	q.items = q.items[:n-1]
	n--
	// Sift down.
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		least := l
		if r := l + 1; r < n && q.items[r].before(q.items[l]) {
			least = r
		}
		if !q.items[least].before(q.items[i]) {
			break
		}
		q.items[i], q.items[least] = q.items[least], q.items[i]
		i = least
	}
	return top
}

// release takes back an event that has run.
func (q *eventQueue) release(e *event) {
	if len(q.free) < eventsFreeMax {
		*e = event{}
		q.free = append(q.free, e)
	}
}

// eventsFreeMax bounds the events kept for reuse.
const eventsFreeMax = 1 << 16

// eventsPendingMax bounds the queue: a run that schedules more than this is
// broken (a feedback loop), and says so rather than eating the machine.
const eventsPendingMax = 4 << 20
