package node

import (
	"fmt"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
)

// applyEntries applies committed entries in log order. Applying is a pure
// function of the state and the entry: every member applies the same
// entries to the same state and reaches the same state.
func (n *Node) applyEntries(ents []*raftpb.Entry) {
	for _, e := range ents {
		if e.GetIndex() <= n.appliedIndex {
			continue // already in the state (restored from a snapshot)
		}
		if e.GetIndex() != n.appliedIndex+1 {
			panic(fmt.Sprintf("node %x: applying entry %d after %d", n.cfg.ID, e.GetIndex(), n.appliedIndex))
		}
		switch e.GetType() {
		case raftpb.EntryNormal:
			n.applyNormal(e)
		case raftpb.EntryConfChange:
			n.applyConfChange(e)
		default:
			// noded never proposes ConfChangeV2; a member that meets one
			// applies it as a no-op like every other member does.
			n.recordApplied(e, 0, nil)
		}
		n.appliedIndex = e.GetIndex()
	}
	if len(ents) > 0 {
		n.serveReads()
		n.askHeldReadIndex()
		n.serveHeldLeaseRequests()
	}
}

func (n *Node) recordApplied(e *raftpb.Entry, reqID uint64, r *pb.InternalRaftRequest) {
	n.recordAppliedErr(e, reqID, r, nil)
}

func (n *Node) recordAppliedErr(e *raftpb.Entry, reqID uint64, r *pb.InternalRaftRequest, err error) {
	if !n.cfg.ReportApplied {
		return
	}
	n.out.Applied = append(n.out.Applied, AppliedEntry{
		Index: e.GetIndex(), Term: e.GetTerm(), Type: e.GetType(), RequestID: reqID, Request: r, Rev: n.store.Rev(), Err: err,
	})
}

func (n *Node) applyNormal(e *raftpb.Entry) {
	if len(e.GetData()) == 0 {
		n.recordApplied(e, 0, nil) // a new leader's empty entry
		return
	}
	r := &pb.InternalRaftRequest{}
	if err := proto.Unmarshal(e.GetData(), r); err != nil {
		// Only members write the log, so this is not expected; every member
		// meets the same bytes and skips them alike, so states stay equal.
		n.recordApplied(e, 0, nil)
		return
	}
	reqID := r.GetHeader().GetID()
	if reqID == 0 {
		reqID = r.GetID()
	}
	if reqID != 0 {
		if n.applied.contains(reqID) {
			// The same proposal appended twice: applied once, on every member.
			n.recordApplied(e, 0, nil)
			return
		}
		n.applied.add(reqID)
	}
	var resp proto.Message
	var err error
	switch {
	case r.GetClusterMemberAttrSet() != nil:
		n.applyMemberAttrSet(r.GetClusterMemberAttrSet())
	default:
		// r was decoded from the entry just now and is dropped after this:
		// the store keeps its keys and values without a copy.
		res := n.store.ApplyOwned(r)
		resp, err = res.Resp, res.Err
		n.afterKVApply(r, res)
		n.afterAuthApply(e.GetIndex(), r, res)
	}
	n.recordAppliedErr(e, reqID, r, err)
	if w, ok := n.waiting[reqID]; ok {
		n.fillHeader(resp, err)
		n.resolve(w, resp, err)
	}
}

// afterKVApply keeps the leader's lease clock in step with the lease table.
func (n *Node) afterKVApply(r *pb.InternalRaftRequest, res kvsm.ApplyResult) {
	if res.Err != nil {
		return
	}
	switch {
	case r.GetLeaseGrant() != nil:
		g, _ := res.Resp.(*pb.LeaseGrantResponse)
		if g == nil || !n.isLeader() {
			return
		}
		n.armLease(LeaseGranted, g.GetID(), g.GetTTL(), 0)
	case r.GetLeaseRevoke() != nil:
		id := r.GetLeaseRevoke().GetID()
		n.leases.forget(id)
		if n.cfg.Planted.LeaseResurrect {
			// Planted bug: the lease comes straight back, so a put onto the
			// revoked lease succeeds.
			n.store.Apply(&pb.InternalRaftRequest{LeaseGrant: &pb.LeaseGrantRequest{ID: id, TTL: 3600}})
		}
	}
}

// expiryTicks is how many ticks after the current one a lease with this
// TTL expires on the leader's clock: one more than the TTL. The current
// tick began before the renewal arrived, anywhere up to a whole tick
// before, so counting the TTL from it would end the lease up to one tick
// early; counting from the next tick boundary rounds the expiry up, to no
// earlier than TTL after the renewal. The planted bugs arm it early.
func (n *Node) expiryTicks(ttlTicks int64) int64 {
	switch {
	case n.cfg.Planted.LeaseExpireEarly:
		return ttlTicks / 2
	case n.cfg.Planted.LeaseExpireTickEarly:
		return ttlTicks - 1
	case n.cfg.Planted.LeaseExpireUnrounded:
		return ttlTicks
	}
	return ttlTicks + 1
}

func memberAttrSet(id uint64, name string, clientURLs []string) *membershippb.ClusterMemberAttrSetRequest {
	return &membershippb.ClusterMemberAttrSetRequest{
		Member_ID: id,
		MemberAttributes: &membershippb.Attributes{
			Name:       name,
			ClientUrls: slices.Clone(clientURLs),
		},
	}
}

func (n *Node) applyMemberAttrSet(r *membershippb.ClusterMemberAttrSetRequest) {
	m, ok := n.members.get(r.GetMember_ID())
	if !ok {
		return // removed meanwhile: nothing to update
	}
	m.Name = r.GetMemberAttributes().GetName()
	m.ClientURLs = slices.Clone(r.GetMemberAttributes().GetClientUrls())
	n.members.put(m)
}

func (n *Node) applyConfChange(e *raftpb.Entry) {
	var cc raftpb.ConfChange
	if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
		n.recordApplied(e, 0, nil)
		return
	}
	ctx, ctxErr := decodeConfChangeContext(cc.GetContext())
	err := ctxErr
	if err == nil {
		err = n.members.validateConfChange(&cc, ctx, n.cfg.MaxLearners)
	}
	if err != nil {
		// Applied as a no-op by every member alike (etcd does the same), so
		// raft's configuration and the member table stay in step.
		noop := proto.Clone(&cc).(*raftpb.ConfChange)
		noop.NodeId = proto.Uint64(raft.None)
		n.confState = n.rn.ApplyConfChange(noop)
	} else {
		n.confState = n.rn.ApplyConfChange(&cc)
		if n.members.applyConfChange(&cc, ctx, n.cfg.ID) {
			n.removed = true
			n.out.Removed = true
		}
	}
	n.recordApplied(e, cc.GetId(), nil)
	w, ok := n.waiting[cc.GetId()]
	if !ok {
		return
	}
	if err != nil {
		if _, isStatus := status.FromError(err); !isStatus {
			err = status.Error(codes.InvalidArgument, err.Error())
		}
		n.resolve(w, nil, err)
		return
	}
	members := n.members.protos()
	h := n.clusterHeader()
	switch w.op.(type) {
	case *pb.MemberAddRequest:
		m, _ := n.members.get(cc.GetNodeId())
		n.resolve(w, &pb.MemberAddResponse{Header: h, Member: m.proto(), Members: members}, nil)
	case *pb.MemberRemoveRequest:
		n.resolve(w, &pb.MemberRemoveResponse{Header: h, Members: members}, nil)
	case *pb.MemberUpdateRequest:
		n.resolve(w, &pb.MemberUpdateResponse{Header: h, Members: members}, nil)
	case *pb.MemberPromoteRequest:
		n.resolve(w, &pb.MemberPromoteResponse{Header: h, Members: members}, nil)
	default:
		n.resolve(w, nil, rpctypes.ErrGRPCMemberNotFound)
	}
}

// Watches.

// Watch handles one request of a client's watch stream: create, cancel or
// progress. Replies come back in Effects.Watch.
func (n *Node) Watch(stream kvsm.StreamID, req *pb.WatchRequest) {
	switch {
	case req.GetCreateRequest() != nil:
		n.pushWatch(stream, n.store.WatchCreate(stream, req.GetCreateRequest()))
	case req.GetCancelRequest() != nil:
		n.pushWatch(stream, n.store.WatchCancel(stream, req.GetCancelRequest().GetWatchId()))
	case req.GetProgressRequest() != nil:
		n.store.WatchRequestProgress(stream)
	}
}

// WatchCloseStream forgets every watcher of a stream that ended.
func (n *Node) WatchCloseStream(stream kvsm.StreamID) { n.store.WatchCloseStream(stream) }

// WatchPause reports that the host could not deliver to a watcher (its
// stream is backed up): the watcher falls back to catching up from
// history instead of queueing without bound.
func (n *Node) WatchPause(stream kvsm.StreamID, watchID int64) { n.store.WatchPause(stream, watchID) }

func (n *Node) pushWatch(stream kvsm.StreamID, resp *pb.WatchResponse) {
	if resp == nil {
		return
	}
	n.fillHeader(resp, nil)
	n.out.Watch = append(n.out.Watch, kvsm.StreamResponse{Stream: stream, Resp: resp})
}

// dropWatchEventEvery is how often the planted DropWatchEvent bug loses an
// event.
const dropWatchEventEvery = 7

func (n *Node) pollWatches() {
	for _, sr := range n.store.WatchPoll(n.cfg.WatchEventsPerPollMax) {
		if n.cfg.Planted.DropWatchEvent && len(sr.Resp.GetEvents()) > 0 {
			n.watchDropCounter++
			if n.watchDropCounter%dropWatchEventEvery == 0 {
				sr.Resp.Events = sr.Resp.Events[1:]
			}
		}
		n.pushWatch(sr.Stream, sr.Resp)
	}
}
