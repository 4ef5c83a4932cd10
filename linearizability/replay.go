package linearizability

import (
	"sort"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// replay applies the committed log, in order, to the model (apply, the same
// step the porcupine model takes) and keeps what the other checkers ask of
// it: the state as of every revision, every event, what each entry answered,
// and when each lease lived.
type replay struct {
	cfg     applyConfig
	entries []replayedEntry
	// byRequestID lists, per request ID, the positions of its entries in
	// entries (more than one is a request applied twice).
	byRequestID map[uint64][]int
	// firstState[rev] is the state when revision rev was first reached: the
	// state reads at rev see (entries after it at the same revision change
	// only leases and compaction). Index 0 is unused.
	firstState []*state
	// revisionEntry[rev] is the position of the entry that produced rev; -1
	// for revision 1, the empty store.
	revisionEntry []int
	events        []event // every event, ascending by revision
	final         *state
	compactions   []int64 // revisions of successful compactions, in log order
	maxCompaction int64   // -1 when the log never compacted
	leaseLives    map[int64][]leaseLife
}

type replayedEntry struct {
	index     uint64 // raft index
	requestID uint64
	raw       *pb.InternalRaftRequest
	req       *request
	before    *state
	after     *state
	resp      *response
}

// leaseLife is one lifetime of a lease ID, in log positions: granted by the
// entry at grantPos, revoked by the one at revokePos (-1: never revoked).
type leaseLife struct {
	grantPos        int
	revokePos       int
	revokedRevision int64 // the revision after the revoke applied
}

func newReplay(committed []CommittedEntry, minLeaseTTL int64) *replay {
	rp := &replay{
		byRequestID:   map[uint64][]int{},
		firstState:    []*state{nil},
		revisionEntry: []int{-1},
		maxCompaction: -1,
		leaseLives:    map[int64][]leaseLife{},
	}
	rp.cfg = applyConfig{minLeaseTTL: minLeaseTTL, past: rp}
	s := initialState()
	rp.firstState = append(rp.firstState, s)
	rp.revisionEntry = append(rp.revisionEntry, -1)
	for pos, c := range committed {
		req := convertInternal(c.Request)
		rec := &recorder{}
		next, resp := apply(s, req, &rp.cfg, rec)
		rp.entries = append(rp.entries, replayedEntry{index: c.Index, requestID: c.RequestID, raw: c.Request, req: req, before: s, after: next, resp: resp})
		if c.RequestID != 0 {
			rp.byRequestID[c.RequestID] = append(rp.byRequestID[c.RequestID], pos)
		}
		rp.events = append(rp.events, rec.events...)
		if next.revision > s.revision {
			rp.firstState = append(rp.firstState, next)
			rp.revisionEntry = append(rp.revisionEntry, pos)
		}
		if resp.err == errNone {
			switch req.kind {
			case kindCompact:
				rp.compactions = append(rp.compactions, req.compactRev)
				rp.maxCompaction = max(rp.maxCompaction, req.compactRev)
			case kindLeaseGrant:
				rp.leaseLives[resp.leaseID] = append(rp.leaseLives[resp.leaseID], leaseLife{grantPos: pos, revokePos: -1})
			case kindLeaseRevoke:
				lives := rp.leaseLives[req.leaseID]
				lives[len(lives)-1].revokePos = pos
				lives[len(lives)-1].revokedRevision = next.revision
			}
		}
		s = next
	}
	rp.final = s
	return rp
}

// stateAt implements pastStates.
func (rp *replay) stateAt(rev int64) *state {
	if rev < 1 || rev >= int64(len(rp.firstState)) {
		return nil
	}
	return rp.firstState[rev]
}

// eventsBetween returns the events with revision in [from, to].
func (rp *replay) eventsBetween(from, to int64) []event {
	i := sort.Search(len(rp.events), func(i int) bool { return rp.events[i].revision >= from })
	j := sort.Search(len(rp.events), func(i int) bool { return rp.events[i].revision > to })
	if i >= j {
		return nil
	}
	return rp.events[i:j]
}

// leaseLifeAt returns the lifetime of lease id that covers the entry which
// produced revision rev, if the lease was alive then.
func (rp *replay) leaseLifeAt(id, rev int64) (leaseLife, bool) {
	if rev < 1 || rev >= int64(len(rp.revisionEntry)) {
		return leaseLife{}, false
	}
	pos := rp.revisionEntry[rev]
	for _, l := range rp.leaseLives[id] {
		if l.grantPos < pos && (l.revokePos < 0 || pos < l.revokePos) {
			return l, true
		}
	}
	return leaseLife{}, false
}

// compacted reports whether rev is a revision the log compacted at.
func (rp *replay) compactedAt(rev int64) bool {
	for _, c := range rp.compactions {
		if c == rev {
			return true
		}
	}
	return false
}
