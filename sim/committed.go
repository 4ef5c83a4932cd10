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
		w.fail("%s applied index %d", m.name, a.Index)
		return
	}
	for uint64(len(w.committed)) < a.Index {
		w.committed = append(w.committed, committedRecord{})
	}
	rec := &w.committed[a.Index-1]
	fp := fingerprint(a.Request)
	if !rec.set {
		*rec = committedRecord{set: true, term: a.Term, typ: a.Type, requestID: a.RequestID, request: a.Request, fingerprint: fp, rev: a.Rev}
		return
	}
	if rec.term != a.Term || rec.typ != a.Type || rec.requestID != a.RequestID || rec.fingerprint != fp {
		w.fail("state machine safety: %s applied %d/%d req=%x at index %d, another member applied %d/%d req=%x",
			m.name, a.Index, a.Term, a.RequestID, a.Index, a.Index, rec.term, rec.requestID)
		return
	}
	if rec.rev != a.Rev {
		w.fail("apply is not deterministic: %s reached revision %d at index %d, another member %d", m.name, a.Rev, a.Index, rec.rev)
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
		MinLeaseTTLSeconds: w.nodeConfigDefaults().MinLeaseTTLSeconds(),
		MaxTxnOps:          node.DefaultMaxTxnOps,
		Locks:              simLocks,
	}
	for i, rec := range w.committed {
		if !rec.set || rec.typ != raftpb.EntryNormal || rec.request == nil {
			continue
		}
		in.Committed = append(in.Committed, linearizability.CommittedEntry{
			Index: uint64(i + 1), RequestID: rec.requestID, Request: rec.request,
		})
	}
	return in
}

func (w *world) nodeConfigDefaults() node.Config {
	return node.Config{TickMs: w.k.TickMs, ElectionTicks: w.k.ElectionTicks}
}
