package node

import (
	"fmt"
	"hash/fnv"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
)

// Handle names one client request for the host that submitted it. The host
// chooses it (unique among its requests in flight); the node echoes it in
// the Result and never interprets it.
type Handle uint64

// Result is the answer to one submitted request.
type Result struct {
	Handle Handle
	Resp   proto.Message // the etcd response (header filled), nil when Err is set
	Err    error         // an etcd rpctypes error, or *NotLeaderError
}

func (r Result) String() string {
	if r.Err != nil {
		return fmt.Sprintf("result h=%d err=%q", r.Handle, r.Err.Error())
	}
	return fmt.Sprintf("result h=%d %s", r.Handle, describeMessage(r.Resp))
}

// Persist is one batch of raft state the host must write to disk, in the
// order given. When Wait is set the node holds back what depends on it (a
// vote, an acknowledgement) until the host reports it durable with
// Persisted(Seq); several may be outstanding, and the host reports them in
// order. Without Wait the write may stay unsynced: it carries only a commit
// index, which raft re-learns after a crash.
//
// Order of writes within a Persist: Snapshot (if any), then Entries, then
// HardState, so that a durable hard state never names a commit index past
// the entries before it.
type Persist struct {
	Seq       uint64
	Wait      bool
	Snapshot  *raftpb.Snapshot // a snapshot received from the leader; nil if none
	Entries   []*raftpb.Entry
	HardState *raftpb.HardState // nil when unchanged
}

func (p *Persist) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "persist seq=%d wait=%t", p.Seq, p.Wait)
	if p.Snapshot != nil {
		fmt.Fprintf(&b, " snap=%d/%d", p.Snapshot.GetMetadata().GetIndex(), p.Snapshot.GetMetadata().GetTerm())
	}
	if n := len(p.Entries); n > 0 {
		fmt.Fprintf(&b, " ents=%d..%d", p.Entries[0].GetIndex(), p.Entries[n-1].GetIndex())
	}
	if p.HardState != nil {
		fmt.Fprintf(&b, " hs=term:%d,vote:%x,commit:%d", p.HardState.GetTerm(), p.HardState.GetVote(), p.HardState.GetCommit())
	}
	return b.String()
}

// AppliedEntry reports one entry the node applied, for hosts that record
// the committed history (the simulator's checkers read it).
type AppliedEntry struct {
	Index, Term uint64
	Type        raftpb.EntryType
	RequestID   uint64                  // 0 for entries without a request
	Request     *pb.InternalRaftRequest // nil for empty and conf-change entries
	Rev         int64                   // the store's revision after applying
	// Err is the state machine's refusal of the request, nil when it
	// applied (an auth refusal among them). Every member must refuse alike;
	// the simulator compares it across members at each index.
	Err error
}

func (a AppliedEntry) String() string {
	return fmt.Sprintf("applied %d/%d %s req=%x rev=%d", a.Index, a.Term, a.Type, a.RequestID, a.Rev)
}

// Proposal reports the request ID a submitted request was proposed under,
// so that a host recording histories can find it in the committed log even
// when the client never learns the outcome.
type Proposal struct {
	Handle    Handle
	RequestID uint64
}

func (p Proposal) String() string { return fmt.Sprintf("proposed h=%d req=%x", p.Handle, p.RequestID) }

// LeaseEventKind names what a leader did with a lease, on its own clock.
type LeaseEventKind uint8

const (
	LeaseGranted LeaseEventKind = iota + 1
	LeaseKeepAliveAcked
	LeaseBecameLeader
	LeaseExpiryProposed
	LeaseTakenOver // a new leader took the lease over with a fresh TTL
)

func (k LeaseEventKind) String() string {
	switch k {
	case LeaseGranted:
		return "granted"
	case LeaseKeepAliveAcked:
		return "keepalive-acked"
	case LeaseBecameLeader:
		return "became-leader"
	case LeaseExpiryProposed:
		return "expiry-proposed"
	case LeaseTakenOver:
		return "taken-over"
	}
	return fmt.Sprintf("lease-event-%d", uint8(k))
}

// LeaseEvent is lease instrumentation: what the leader decided, at which
// tick of its own clock. The simulator's lease checker reads it.
type LeaseEvent struct {
	Kind      LeaseEventKind
	LocalTick int64
	Lease     int64
	TTLTicks  int64
}

func (e LeaseEvent) String() string {
	return fmt.Sprintf("lease %s id=%x tick=%d ttl=%d", e.Kind, e.Lease, e.LocalTick, e.TTLTicks)
}

// Effects is everything the node asks of its host since the previous call
// to Effects, in the order the host must do it: first write Persist (and,
// for each with Wait, call Persisted once it is durable), send Messages
// (already safe to send: what they depend on is durable), hand out Results
// and Watch responses, and store SaveSnapshot.
type Effects struct {
	Persist      []*Persist
	Messages     []*raftpb.Message
	Results      []Result
	Watch        []kvsm.StreamResponse
	SaveSnapshot *LocalSnapshot // a local snapshot; the host encodes and stores it and may release the log it covers
	Proposed     []Proposal     // only with Config.ReportApplied
	Applied      []AppliedEntry // only with Config.ReportApplied
	LeaseEvents  []LeaseEvent   // only with Config.ReportLeaseEvents
	Auth         []AuthEvent    // applied auth changes the host's token store follows
	Removed      bool           // this member was removed from the cluster; the host stops it
	More         bool           // the node held work back so the host could start a write first: call Effects again
}

// Empty reports whether there is nothing to do.
func (e *Effects) Empty() bool {
	return len(e.Persist) == 0 && len(e.Messages) == 0 && len(e.Results) == 0 && len(e.Watch) == 0 &&
		e.SaveSnapshot == nil && len(e.Proposed) == 0 && len(e.Applied) == 0 && len(e.LeaseEvents) == 0 && len(e.Auth) == 0 && !e.Removed && !e.More
}

// String describes the effects deterministically, one item a line, for
// traces and golden files.
func (e *Effects) String() string {
	var b strings.Builder
	for _, p := range e.Persist {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	for _, m := range e.Messages {
		b.WriteString(raft.DescribeMessage(m, nil))
		b.WriteByte('\n')
	}
	for _, r := range e.Results {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	for _, w := range e.Watch {
		b.WriteString(w.String())
		b.WriteByte('\n')
	}
	if e.SaveSnapshot != nil {
		fmt.Fprintf(&b, "save-snapshot %d/%d\n", e.SaveSnapshot.Metadata.GetIndex(), e.SaveSnapshot.Metadata.GetTerm())
	}
	for _, p := range e.Proposed {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	for _, a := range e.Applied {
		b.WriteString(a.String())
		b.WriteByte('\n')
	}
	for _, l := range e.LeaseEvents {
		b.WriteString(l.String())
		b.WriteByte('\n')
	}
	for _, a := range e.Auth {
		b.WriteString(a.String())
		b.WriteByte('\n')
	}
	if e.Removed {
		b.WriteString("removed\n")
	}
	return b.String()
}

// describeMessage renders a protobuf message deterministically: the type
// name and its compact text form with maps sorted (protobuf's text encoder
// is not stable across runs, so marshal deterministically and hash).
func describeMessage(m proto.Message) string {
	if m == nil {
		return "<nil>"
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return fmt.Sprintf("%s(unmarshalable: %v)", m.ProtoReflect().Descriptor().Name(), err)
	}
	return fmt.Sprintf("%s[%d bytes %08x]", m.ProtoReflect().Descriptor().Name(), len(data), fnv32(data))
}

func fnv32(data []byte) uint32 {
	h := fnv.New32a()
	h.Write(data)
	return h.Sum32()
}
