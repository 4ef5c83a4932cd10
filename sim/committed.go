package sim

import (
	"hash/fnv"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/linearizability"
	"github.com/noded/noded/node"
)

// committedRecord is what the members applied at one raft index. Every
// member that applies an index must apply the same entry and reach the
// same revision (raft's state machine safety, and kvsm's determinism);
// the first member to apply it sets the record and every later one is
// compared with it.
type committedRecord struct {
	set         bool
	term        uint64
	typ         raftpb.EntryType
	requestID   uint64
	request     *pb.InternalRaftRequest
	fingerprint uint64
	rev         int64
	appliedAt   int64  // virtual time the first member applied it
	err         error  // the first member's answer: nil, or the state machine's refusal
	answer      string // answerOf(err)
}

// committedIndexMax bounds the committed-log record a run keeps.
const committedIndexMax = 10_000_000

func fingerprint(r *pb.InternalRaftRequest) uint64 {
	if r == nil {
		return 0
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return 1
	}
	h := fnv.New64a()
	_, _ = h.Write(data)
	return h.Sum64()
}

func (w *world) applied(m *member, a node.AppliedEntry) {
	if a.Index == 0 || a.Index > committedIndexMax {
		w.fail("applied-index", "%s applied index %d", m.name, a.Index)
		return
	}
	for uint64(len(w.committed)) < a.Index {
		w.committed = append(w.committed, committedRecord{})
	}
	rec := &w.committed[a.Index-1]
	fp := fingerprint(a.Request)
	if !rec.set {
		*rec = committedRecord{set: true, term: a.Term, typ: a.Type, requestID: a.RequestID, request: a.Request, fingerprint: fp, rev: a.Rev, appliedAt: w.now,
			err: a.Err, answer: answerOf(a.Err)}
		if isAuthRefusal(a.Err) {
			w.stats.AuthRefused++
		}
		return
	}
	if rec.term != a.Term || rec.typ != a.Type || rec.requestID != a.RequestID || rec.fingerprint != fp {
		w.fail("state-machine-safety", "%s applied %d/%d req=%x at index %d, another member applied %d/%d req=%x",
			m.name, a.Index, a.Term, a.RequestID, a.Index, a.Index, rec.term, rec.requestID)
		return
	}
	if !w.checkAnswerAgreement(m, a.Index, rec, a.Err) {
		return
	}
	if rec.rev != a.Rev {
		w.fail("deterministic-apply", "%s reached revision %d at index %d, another member %d", m.name, a.Rev, a.Index, rec.rev)
	}
}

func (w *world) proposed(m *member, p node.Proposal) {
	if i, ok := w.handles[handleKey{m.index, p.Handle}]; ok {
		w.history[i].RequestID = p.RequestID
	}
}

// checkerInput gathers what the checkers read.
func (w *world) checkerInput() linearizability.Input {
	in := linearizability.Input{
		History:            w.history,
		Watches:            w.watches,
		Leases:             w.leaseEvents,
		KeepAlives:         w.keepAlives,
		Clocks:             linearizability.Clocks{ShortestSecondNs: w.shortestSecondNs(), Faults: w.clockFaults},
		MinLeaseTTLSeconds: w.nodeConfigDefaults().MinLeaseTTLSeconds(),
		MaxTxnOps:          node.DefaultMaxTxnOps,
		Locks:              simLocks,
	}
	for i, rec := range w.committed {
		if !rec.set || rec.typ != raftpb.EntryNormal || rec.request == nil {
			continue
		}
		if isAuthRefusal(rec.err) {
			// Refused by the permission check (every member alike, or the
			// auth-agreement checker has said otherwise): it changed nothing.
			continue
		}
		in.Committed = append(in.Committed, linearizability.CommittedEntry{
			Index: uint64(i + 1), RequestID: rec.requestID, Request: rec.request, AppliedAt: rec.appliedAt,
		})
	}
	return in
}

func (w *world) nodeConfigDefaults() node.Config {
	return node.Config{TickMs: w.k.TickMs, ElectionTicks: w.k.ElectionTicks}
}

// shortestSecondNs is the least virtual time any member's clock takes to
// count one of its seconds: its tick period (shorter for a clock that runs
// fast, and rounded down to the nanosecond) times its ticks per second.
func (w *world) shortestSecondNs() int64 {
	second := int64(1e9)
	for i := range w.k.DriftPermille {
		second = min(second, w.tickPeriodNs(i)*1000/w.k.TickMs)
	}
	return second
}
