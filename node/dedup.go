package node

// requestWindow remembers the request IDs of the last requests applied, so
// that a request appended to the log twice is applied once. Raft does not
// promise that: a proposal a follower forwards (MsgProp) is appended again
// if the message reaches the leader twice, and a transport that resends
// after a reconnect, or the simulator's duplicating network, does exactly
// that. The window is part of the replicated state (it travels in
// snapshots), so every member skips the same entries.
type requestWindow struct {
	ring []uint64 // the last IDs in apply order; ring[next] is the oldest once full
	next int
	seen map[uint64]struct{} // the IDs in ring; lookups only
}

// RequestWindowSize is how many applied requests back a duplicate is
// still recognised. A duplicate trails its original by the network's
// reordering window, a handful of entries in practice.
const RequestWindowSize = 10000

func newRequestWindow() requestWindow {
	return requestWindow{seen: make(map[uint64]struct{}, RequestWindowSize)}
}

func (rw *requestWindow) contains(id uint64) bool {
	_, ok := rw.seen[id]
	return ok
}

func (rw *requestWindow) add(id uint64) {
	if len(rw.ring) < RequestWindowSize {
		rw.ring = append(rw.ring, id)
		rw.seen[id] = struct{}{}
		return
	}
	delete(rw.seen, rw.ring[rw.next])
	rw.ring[rw.next] = id
	rw.seen[id] = struct{}{}
	rw.next = (rw.next + 1) % RequestWindowSize
}

// ordered returns the IDs oldest first, for snapshots.
func (rw *requestWindow) ordered() []uint64 {
	out := make([]uint64, 0, len(rw.ring))
	out = append(out, rw.ring[rw.next:]...)
	return append(out, rw.ring[:rw.next]...)
}

func requestWindowFrom(ids []uint64) requestWindow {
	rw := newRequestWindow()
	for _, id := range ids {
		rw.add(id)
	}
	return rw
}
