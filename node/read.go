package node

import (
	"encoding/binary"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	"google.golang.org/protobuf/proto"
)

// Linearizable reads go through raft's ReadIndex, in batches: every read
// that arrives while no ReadIndex is out joins the next one; one ReadIndex
// answers the whole batch. A batch is served once the member has applied
// up to the index the leader confirmed (after a heartbeat round showed it
// still leads), so the read sees every write that completed before it
// began, on whichever member it runs.
type readQueue struct {
	unissued []*waiter    // waiting for the next ReadIndex
	inflight *readBatch   // asked, no answer yet
	indexed  []*readBatch // answered; waiting for apply to reach their index
	ctxSeq   uint64
}

type readBatch struct {
	ctx        uint64
	reads      []*waiter
	index      uint64
	issuedTick int64
	asked      bool // raft has it (false while a new leader holds it back)
}

func (q *readQueue) size() int {
	n := len(q.unissued)
	if q.inflight != nil {
		n += len(q.inflight.reads)
	}
	for _, b := range q.indexed {
		n += len(b.reads)
	}
	return n
}

func (n *Node) linearizableRead(h Handle, op proto.Message) {
	if n.cfg.Planted.LocalLinearizableReads {
		n.serveRead(n.newWaiterDetached(h, op))
		return
	}
	if n.reads.size() >= n.cfg.PendingRequestsMax {
		n.reply(h, nil, rpctypes.ErrGRPCRequestTooManyRequests)
		return
	}
	n.reads.unissued = append(n.reads.unissued, n.newWaiter(h, op))
	n.maybeIssueReadIndex()
}

// newWaiterDetached is a waiter with no timeout, served at once.
func (n *Node) newWaiterDetached(h Handle, op proto.Message) *waiter {
	return &waiter{handle: h, op: op, ai: n.caller}
}

func (n *Node) maybeIssueReadIndex() {
	if n.reads.inflight != nil || len(n.reads.unissued) == 0 {
		return
	}
	n.reads.ctxSeq++
	b := &readBatch{ctx: n.reads.ctxSeq, reads: n.reads.unissued}
	n.reads.unissued = nil
	n.reads.inflight = b
	n.askReadIndex(b)
}

// askReadIndex asks raft for the read index of a batch (again, when
// retrying). As leader it first waits until an entry of its own term is
// committed: only then does its commit index cover everything earlier
// terms committed. raft holds ReadIndex back for exactly that reason,
// except on a one-voter cluster, where it answers at once with the commit
// index the member restarted with; that index is written without a sync
// and can lag the log after a crash, so the read would miss a write
// already acknowledged. Tick asks again until it may.
func (n *Node) askReadIndex(b *readBatch) {
	b.issuedTick = n.tick
	b.asked = !n.isLeader() || n.committedInCurrentTerm()
	if b.asked {
		n.rn.ReadIndex(readCtx(b.ctx))
	}
}

// askHeldReadIndex asks for a batch a new leader held back, as soon as it
// has committed an entry of its term.
func (n *Node) askHeldReadIndex() {
	if b := n.reads.inflight; b != nil && !b.asked {
		n.askReadIndex(b)
	}
}

// committedInCurrentTerm reports whether the commit index is at an entry
// of the current term.
func (n *Node) committedInCurrentTerm() bool {
	bs := n.rn.BasicStatus()
	term, err := n.storage.Term(bs.GetCommit())
	return err == nil && term == bs.GetTerm()
}

func readCtx(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// retryReadIndex asks again when a ReadIndex went unanswered (no leader,
// a leader change, a lost message): raft does not retry it.
func (n *Node) retryReadIndex() {
	b := n.reads.inflight
	if b == nil {
		n.maybeIssueReadIndex()
		return
	}
	live := b.reads[:0]
	for _, w := range b.reads {
		if !w.done {
			live = append(live, w)
		}
	}
	b.reads = live
	if len(live) == 0 {
		n.reads.inflight = nil
		n.maybeIssueReadIndex()
		return
	}
	if n.tick-b.issuedTick >= int64(n.cfg.ReadIndexRetryTicks) {
		n.askReadIndex(b)
	}
}

func (n *Node) onReadStates(states []raft.ReadState) {
	for _, rs := range states {
		b := n.reads.inflight
		if b == nil || len(rs.RequestCtx) != 8 || binary.BigEndian.Uint64(rs.RequestCtx) != b.ctx {
			continue // an answer to a ReadIndex already answered
		}
		b.index = rs.Index
		n.reads.indexed = append(n.reads.indexed, b)
		n.reads.inflight = nil
	}
	n.serveReads()
	n.maybeIssueReadIndex()
}

// serveReads serves every batch whose index has been applied.
func (n *Node) serveReads() {
	kept := n.reads.indexed[:0]
	for _, b := range n.reads.indexed {
		if b.index > n.appliedIndex {
			kept = append(kept, b)
			continue
		}
		for _, w := range b.reads {
			n.serveRead(w)
		}
	}
	for i := len(kept); i < len(n.reads.indexed); i++ {
		n.reads.indexed[i] = nil
	}
	n.reads.indexed = kept
}

func (n *Node) serveRead(w *waiter) {
	if w.done {
		return
	}
	if err := n.readRefusal(w.ai, w.op); err != nil {
		n.resolve(w, nil, err)
		return
	}
	switch r := w.op.(type) {
	case *pb.RangeRequest:
		resp, err := n.store.Range(r)
		n.fillHeader(resp, err)
		n.resolve(w, resp, err)
	case *pb.TxnRequest:
		resp, err := n.store.ReadTxn(r)
		n.fillHeader(resp, err)
		n.resolve(w, resp, err)
	case *pb.MemberListRequest:
		n.resolve(w, &pb.MemberListResponse{Header: n.clusterHeader(), Members: n.members.protos()}, nil)
	default:
		n.resolve(w, nil, ErrUnsupported)
	}
}
