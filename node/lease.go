package node

import (
	"container/heap"
	"slices"
)

// leaseClock is the leader's view of when each lease expires, in ticks of
// the leader's own clock. Only the leader keeps one: a follower's is empty,
// and a member that wins an election starts a fresh one in which every
// lease gets its full TTL plus an election timeout, because keepalives the
// previous leader acknowledged are not known to it.
//
// Expiry is a proposal: the leader proposes a revoke and the lease ends
// when the revoke is applied, on every member alike.
type leaseClock struct {
	expiryTick map[int64]int64 // lease ID -> tick at which it expires; lookups only
	queue      expiryQueue     // (tick, ID) in tick order; stale items skipped lazily
}

func newLeaseClock() leaseClock {
	return leaseClock{expiryTick: map[int64]int64{}}
}

// set makes lease id expire at tick.
func (lc *leaseClock) set(id, tick int64) {
	lc.expiryTick[id] = tick
	heap.Push(&lc.queue, expiryItem{tick: tick, id: id})
	if len(lc.queue) > staleExpiryItemsFactor*len(lc.expiryTick)+staleExpiryItemsSlack {
		lc.rebuild()
	}
}

// Every keepalive queues a new item and leaves the old one stale; once stale
// items outnumber live ones by this factor the queue is rebuilt, which
// bounds it at that factor times the number of leases.
const (
	staleExpiryItemsFactor = 4
	staleExpiryItemsSlack  = 64
)

func (lc *leaseClock) rebuild() {
	lc.queue = lc.queue[:0]
	//noded:map-order-ok heap.Init orders by (tick, ID), which is unique per lease, so pops are deterministic
	for id, tick := range lc.expiryTick {
		lc.queue = append(lc.queue, expiryItem{tick: tick, id: id})
	}
	heap.Init(&lc.queue)
}

func (lc *leaseClock) forget(id int64) {
	delete(lc.expiryTick, id)
}

func (lc *leaseClock) reset() {
	clear(lc.expiryTick)
	lc.queue = lc.queue[:0]
}

func (lc *leaseClock) expiry(id int64) (int64, bool) {
	t, ok := lc.expiryTick[id]
	return t, ok
}

// wakeAt queues a check of lease id at tick without changing its expiry
// (used to retry a revoke that has not applied yet).
func (lc *leaseClock) wakeAt(id, tick int64) {
	heap.Push(&lc.queue, expiryItem{tick: tick, id: id})
}

// popExpired returns up to limit leases that have expired by now, in
// expiry order. Queue items are wake-ups: one whose lease was renewed
// since (expiry now later) or forgotten is dropped. An expired lease stays
// expired (keepalives cannot renew it) until forgotten when its revoke
// applies; the caller queues a wake-up to retry the revoke meanwhile.
func (lc *leaseClock) popExpired(now int64, limit int) []int64 {
	var out []int64
	for len(lc.queue) > 0 && len(out) < limit {
		top := lc.queue[0]
		if top.tick > now {
			break
		}
		heap.Pop(&lc.queue)
		if cur, ok := lc.expiryTick[top.id]; !ok || cur > now {
			continue
		}
		if len(out) > 0 && slices.Contains(out, top.id) {
			continue
		}
		out = append(out, top.id)
	}
	return out
}

type expiryItem struct {
	tick int64
	id   int64
}

// expiryQueue is a min-heap ordered by tick, then lease ID, so that equal
// ticks pop in a deterministic order.
type expiryQueue []expiryItem

func (q expiryQueue) Len() int { return len(q) }
func (q expiryQueue) Less(i, j int) bool {
	if q[i].tick != q[j].tick {
		return q[i].tick < q[j].tick
	}
	return q[i].id < q[j].id
}
func (q expiryQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *expiryQueue) Push(x any)   { *q = append(*q, x.(expiryItem)) }
func (q *expiryQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}
