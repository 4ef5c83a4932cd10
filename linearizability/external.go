package linearizability

import (
	"fmt"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// Histories recorded outside the simulator, from real processes and real
// clients, lack two things the simulator hands the checkers: the request ID
// the cluster logged each request under (a client never sees it), and the
// time each committed entry first applied (no process reports it). The
// committed log itself comes from the members' WALs. ResolveExternal fills
// in what can be derived soundly from the history and the log:
//
//   - Request IDs, by content. Every write a client sent is matched to an
//     entry logging the same request (deterministic protobuf encoding; a
//     grant that left the ID to the server matches a logged grant of the
//     same TTL with any ID). A write whose response the client learned takes
//     the earliest unclaimed such entry whose replay gives that response
//     (its header revision pins it); writes with an unknown outcome then
//     take the remaining entries in log order, the earliest-called write
//     first. Requests made unique by their content (a put of a value no
//     other put carries) are matched exactly. Identical requests are
//     interchangeable: the same request at the same log position has the
//     same effect whoever sent it, and giving the earliest entry to the
//     earliest call never assigns an entry to a write sent after the entry
//     could have applied when another assignment would not. Entries no write
//     claims (a lease expiry, or a copy of a request the client library sent
//     twice) are committed entries no client claims, as in the simulator.
//   - AppliedAt, as an upper bound. A member that answers with header
//     revision H has applied every entry up to the one that produced H, so
//     an entry applied no later than the first response (or watch response)
//     to arrive with a header revision at or past the one the entry, or the
//     first revision-changing entry after it, produced. Only the
//     lease-expiry-time checker reads AppliedAt, and it reports an expiry
//     whose AppliedAt comes before a promised deadline: with an upper bound
//     every such report is a real early expiry (the revoke applied no later
//     than the bound), while an early expiry that no client observed in
//     time goes unreported. The bound is never used as a lower bound.
//
// The simulator's tick-level lease checker (Input.Leases) needs each
// leader's own tick counts, which real processes do not report; it is left
// empty and the true-time checker judges leases instead.

// ExternalStats counts what ResolveExternal matched.
type ExternalStats struct {
	MatchedLearned   int // writes with a learned outcome matched to their entry
	MatchedUnknown   int // writes with an unknown outcome found in the log
	UnmatchedLearned int // writes with a learned, non-refused outcome and no entry
	Unclaimed        int // client-kind entries no write claims (expiries, duplicates)
	AppliedAtBounded int // committed entries given an AppliedAt upper bound
}

func (s ExternalStats) String() string {
	return fmt.Sprintf("matched %d learned and %d unknown writes to the log, %d learned writes unmatched, %d entries unclaimed, %d apply times bounded",
		s.MatchedLearned, s.MatchedUnknown, s.UnmatchedLearned, s.Unclaimed, s.AppliedAtBounded)
}

// ResolveExternal sets the RequestID of every write in in.History that has
// none, and the AppliedAt of every committed entry that has none, as
// described above. It changes nothing else; Check then runs as usual.
func ResolveExternal(in *Input) ExternalStats {
	var stats ExternalStats
	rp := newReplay(in.Committed, in.MinLeaseTTLSeconds)
	match := &matchConfig{minLeaseTTL: in.MinLeaseTTLSeconds}

	// Entries by content key, in log order.
	byKey := map[string][]int{}
	for pos, e := range rp.entries {
		if e.requestID == 0 || !e.req.isWrite() {
			continue
		}
		for _, k := range entryKeys(e.raw) {
			byKey[k] = append(byKey[k], pos)
		}
	}
	claimed := make([]bool, len(rp.entries))
	take := func(key string, ok func(pos int) bool) int {
		for _, pos := range byKey[key] {
			if !claimed[pos] && ok(pos) {
				claimed[pos] = true
				return pos
			}
		}
		return -1
	}

	type pending struct {
		index int
		key   string
		req   *request
	}
	var learned, unknown []pending
	for i, o := range in.History {
		if o.RequestID != 0 {
			continue
		}
		req, err := convertRequest(o.Request)
		if err != nil || !req.isWrite() {
			continue
		}
		p := pending{index: i, key: requestKey(o.Request), req: req}
		if o.Return == Unknown {
			unknown = append(unknown, p)
			continue
		}
		obs, err := convertResponse(o.Response, req)
		switch {
		case err != nil:
		case obs.err == errIndeterminate:
			unknown = append(unknown, p)
		case obs.err.refusedBeforeRaft():
		default:
			learned = append(learned, p)
		}
	}
	// upper[pos] bounds when entry pos applied (Unknown: no bound). An entry
	// is never given to a write sent after it had applied.
	upper := appliedUpperBounds(in, rp)
	byCall := func(a, b pending) int {
		ca, cb := in.History[a.index].Call, in.History[b.index].Call
		switch {
		case ca < cb:
			return -1
		case ca > cb:
			return 1
		}
		return 0
	}
	slices.SortStableFunc(learned, byCall)
	slices.SortStableFunc(unknown, byCall)
	for _, p := range learned {
		o := in.History[p.index]
		obs, _ := convertResponse(o.Response, p.req)
		replaysAs := func(pos int) bool { return matches(p.req, rp.entries[pos].resp, obs, match, true) }
		// Whichever entry is this write's, every entry before the first that
		// replays to its response applied before it returned.
		for _, pos := range byKey[p.key] {
			if replaysAs(pos) {
				for q := pos - 1; q >= 0 && upper[q] > o.Return; q-- {
					upper[q] = o.Return
				}
				break
			}
		}
		pos := take(p.key, func(pos int) bool { return o.Call < upper[pos] && replaysAs(pos) })
		if pos < 0 {
			// No entry replays to what the client saw: give it the first
			// unclaimed entry of its request (one it could have been, by
			// time, if there is such), so the durability check names the
			// difference; or none, and it reports the write lost.
			pos = take(p.key, func(pos int) bool { return o.Call < upper[pos] })
		}
		if pos < 0 {
			pos = take(p.key, func(int) bool { return true })
		}
		if pos < 0 {
			stats.UnmatchedLearned++
			continue
		}
		in.History[p.index].RequestID = rp.entries[pos].requestID
		stats.MatchedLearned++
	}
	// Each unknown write, earliest call first, takes the earliest unclaimed
	// entry of its request that had not applied before it was sent. The
	// bounds grow along the log, so an entry a later write could take but
	// an earlier one could not is never taken by the earlier one.
	for _, p := range unknown {
		call := in.History[p.index].Call
		if pos := take(p.key, func(pos int) bool { return call < upper[pos] }); pos >= 0 {
			in.History[p.index].RequestID = rp.entries[pos].requestID
			stats.MatchedUnknown++
		}
	}
	for pos, e := range rp.entries {
		if !claimed[pos] && e.requestID != 0 && e.req.isWrite() {
			stats.Unclaimed++
		}
	}
	for pos := range in.Committed {
		if in.Committed[pos].AppliedAt == 0 && upper[pos] != Unknown {
			in.Committed[pos].AppliedAt = upper[pos]
			stats.AppliedAtBounded++
		}
	}
	return stats
}

// requestKey is the content key of a client's write.
func requestKey(q Request) string {
	switch {
	case q.Put != nil:
		return contentKey("put", q.Put)
	case q.DeleteRange != nil:
		return contentKey("delete", q.DeleteRange)
	case q.Txn != nil:
		return contentKey("txn", q.Txn)
	case q.Compact != nil:
		return contentKey("compact", q.Compact)
	case q.LeaseGrant != nil:
		if q.LeaseGrant.GetID() == 0 {
			return fmt.Sprintf("grant any ID ttl=%d", q.LeaseGrant.GetTTL())
		}
		return contentKey("grant", q.LeaseGrant)
	case q.LeaseRevoke != nil:
		return contentKey("revoke", q.LeaseRevoke)
	}
	return ""
}

// entryKeys are the content keys a logged request answers to: a grant
// answers to its own ID and, for a client that left the ID to the server,
// to its TTL alone.
func entryKeys(r *pb.InternalRaftRequest) []string {
	switch {
	case r.GetPut() != nil:
		return []string{contentKey("put", r.GetPut())}
	case r.GetDeleteRange() != nil:
		return []string{contentKey("delete", r.GetDeleteRange())}
	case r.GetTxn() != nil:
		return []string{contentKey("txn", r.GetTxn())}
	case r.GetCompaction() != nil:
		return []string{contentKey("compact", r.GetCompaction())}
	case r.GetLeaseGrant() != nil:
		g := r.GetLeaseGrant()
		return []string{contentKey("grant", g), fmt.Sprintf("grant any ID ttl=%d", g.GetTTL())}
	case r.GetLeaseRevoke() != nil:
		return []string{contentKey("revoke", r.GetLeaseRevoke())}
	}
	return nil
}

func contentKey(kind string, m proto.Message) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return kind + " unencodable " + fmt.Sprint(m)
	}
	return kind + " " + string(b)
}

// appliedUpperBounds returns, per committed entry, the earliest arrival of a
// response whose header revision shows the entry applied, or Unknown.
func appliedUpperBounds(in *Input, rp *replay) []int64 {
	type seen struct{ revision, at int64 }
	var obs []seen
	for _, o := range in.History {
		if o.Return == Unknown || o.Response.Err != nil {
			continue
		}
		if h := headerRevision(o.Response); h > 0 {
			obs = append(obs, seen{h, o.Return})
		}
	}
	for _, w := range in.Watches {
		for _, r := range w.Responses {
			if h := r.Resp.GetHeader().GetRevision(); h > 0 {
				obs = append(obs, seen{h, r.Time})
			}
		}
	}
	// earliestFrom[rev]: the first arrival of a header revision >= rev.
	final := rp.final.revision
	earliestFrom := make([]int64, final+2)
	for i := range earliestFrom {
		earliestFrom[i] = Unknown
	}
	for _, s := range obs {
		r := min(s.revision, final+1)
		earliestFrom[r] = min(earliestFrom[r], s.at)
	}
	for r := final; r >= 0; r-- {
		earliestFrom[r] = min(earliestFrom[r], earliestFrom[r+1])
	}
	upper := make([]int64, len(rp.entries))
	var shownBy int64 // the revision whose reach proves entry pos applied; 0: none
	for pos := len(rp.entries) - 1; pos >= 0; pos-- {
		e := rp.entries[pos]
		if e.after.revision > e.before.revision {
			shownBy = e.after.revision
		}
		upper[pos] = Unknown
		if shownBy != 0 {
			upper[pos] = earliestFrom[shownBy]
		}
	}
	return upper
}

// headerRevision is the header revision of a learned response.
func headerRevision(r Response) int64 {
	for _, h := range []*pb.ResponseHeader{r.Range.GetHeader(), r.Put.GetHeader(), r.DeleteRange.GetHeader(),
		r.Txn.GetHeader(), r.Compact.GetHeader(), r.LeaseGrant.GetHeader(), r.LeaseRevoke.GetHeader()} {
		if h != nil {
			return h.GetRevision()
		}
	}
	return 0
}
