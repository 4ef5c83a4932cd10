package node

import (
	"errors"
	"fmt"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
)

// NotLeaderError answers a request only the leader can serve (lease
// keepalive and time-to-live, learner promotion, leader transfer). The host
// forwards the request to Leader, or tells the client to.
type NotLeaderError struct {
	Leader uint64 // 0 when no leader is known
}

func (e *NotLeaderError) Error() string {
	if e.Leader == 0 {
		return rpctypes.ErrGRPCNoLeader.Error()
	}
	return fmt.Sprintf("%s (leader is %x)", rpctypes.ErrGRPCNotLeader.Error(), e.Leader)
}

// GRPCStatus lets gRPC carry it with etcd's code and text.
func (e *NotLeaderError) GRPCStatus() *status.Status {
	if e.Leader == 0 {
		s, _ := status.FromError(rpctypes.ErrGRPCNoLeader)
		return s
	}
	s, _ := status.FromError(rpctypes.ErrGRPCNotLeader)
	return s
}

// ErrUnsupported answers a request type the node does not serve.
var ErrUnsupported = status.Error(codes.Unimplemented, "etcdserver: request not supported by noded")

// waiter is one request waiting for an applied entry, a read index, or a
// leader change.
type waiter struct {
	handle   Handle
	op       proto.Message // what was asked (reads execute it; conf changes shape the reply)
	id       uint64        // the request ID it was proposed under (0 for reads)
	deadline int64         // tick at which it fails with a timeout
	target   uint64        // MoveLeader's transferee
	ai       kvsm.AuthInfo // who asked (reads are checked when served)
	// appliedMin is the applied index a held lease request waits for (the
	// commit index when it arrived).
	appliedMin uint64
	done       bool
}

// timeoutQueue holds waiters in deadline order. Every waiter gets the same
// timeout, so arrival order is deadline order and a FIFO suffices; done
// waiters are skipped when they reach the front.
type timeoutQueue struct {
	items []*waiter
	head  int
}

func (q *timeoutQueue) push(w *waiter) {
	if q.head > 1024 && q.head*2 > len(q.items) {
		q.items = append(q.items[:0], q.items[q.head:]...)
		q.head = 0
	}
	q.items = append(q.items, w)
}

func (q *timeoutQueue) popExpired(now int64) *waiter {
	for q.head < len(q.items) {
		w := q.items[q.head]
		if !w.done && w.deadline > now {
			return nil
		}
		q.items[q.head] = nil
		q.head++
		if !w.done {
			return w
		}
	}
	return nil
}

func (n *Node) newWaiter(h Handle, op proto.Message) *waiter {
	w := &waiter{handle: h, op: op, ai: n.caller, deadline: n.tick + int64(n.cfg.RequestTimeoutTicks)}
	n.timeouts.push(w)
	return w
}

func (n *Node) resolve(w *waiter, resp proto.Message, err error) {
	if w.done {
		return
	}
	w.done = true
	if w.id != 0 {
		delete(n.waiting, w.id)
	}
	n.out.Results = append(n.out.Results, Result{Handle: w.handle, Resp: resp, Err: err})
}

func (n *Node) reply(h Handle, resp proto.Message, err error) {
	n.out.Results = append(n.out.Results, Result{Handle: h, Resp: resp, Err: err})
}

func (n *Node) expireTimeouts() {
	for {
		w := n.timeouts.popExpired(n.tick)
		if w == nil {
			return
		}
		err := rpctypes.ErrGRPCTimeout
		if w == n.transfer {
			err = rpctypes.ErrGRPCTimeoutDueToLeaderFail
			n.transfer = nil
		}
		n.resolve(w, nil, err)
	}
}

// Submit hands the node one client request. op is an etcd request message:
// *pb.RangeRequest, *pb.PutRequest, *pb.DeleteRangeRequest, *pb.TxnRequest,
// *pb.CompactionRequest, *pb.LeaseGrantRequest, *pb.LeaseRevokeRequest,
// *pb.LeaseKeepAliveRequest, *pb.LeaseTimeToLiveRequest,
// *pb.LeaseLeasesRequest, *pb.MemberAddRequest, *pb.MemberRemoveRequest,
// *pb.MemberUpdateRequest, *pb.MemberPromoteRequest, *pb.MemberListRequest,
// *pb.AlarmRequest, *pb.StatusRequest, *pb.HashKVRequest or
// *pb.MoveLeaderRequest. The answer comes back as a Result with h.
func (n *Node) Submit(h Handle, op proto.Message) {
	if n.removed {
		n.reply(h, nil, rpctypes.ErrGRPCStopped)
		return
	}
	if n.isLearner() {
		switch r := op.(type) {
		case *pb.RangeRequest:
			if !r.GetSerializable() {
				n.reply(h, nil, rpctypes.ErrGRPCNotSupportedForLearner)
				return
			}
		case *pb.StatusRequest, *pb.HashKVRequest, *pb.MemberListRequest:
		default:
			n.reply(h, nil, rpctypes.ErrGRPCNotSupportedForLearner)
			return
		}
	}
	if err := n.adminRefusal(op); err != nil {
		n.reply(h, nil, err)
		return
	}
	if ir, ok := authRequest(op); ok {
		n.propose(h, ir)
		return
	}
	switch r := op.(type) {
	case *pb.RangeRequest:
		if r.GetSerializable() {
			if err := n.readRefusal(n.caller, r); err != nil {
				n.reply(h, nil, err)
				return
			}
			resp, err := n.store.Range(r)
			n.fillHeader(resp, err)
			n.reply(h, resp, err)
			return
		}
		n.linearizableRead(h, r)
	case *pb.TxnRequest:
		if isReadOnlyTxn(r) {
			n.linearizableRead(h, r)
			return
		}
		n.proposeKV(h, &pb.InternalRaftRequest{Txn: r})
	case *pb.PutRequest:
		n.proposeKV(h, &pb.InternalRaftRequest{Put: r})
	case *pb.DeleteRangeRequest:
		n.proposeKV(h, &pb.InternalRaftRequest{DeleteRange: r})
	case *pb.CompactionRequest:
		n.proposeKV(h, &pb.InternalRaftRequest{Compaction: r})
	case *pb.LeaseGrantRequest:
		g := proto.Clone(r).(*pb.LeaseGrantRequest)
		if g.GetID() == 0 {
			// etcd's leader picks a positive ID from its request ID generator;
			// so does noded, so that the ID is in the log, not decided at apply.
			g.ID = int64(n.nextRequestID() & (1<<63 - 1))
		}
		n.proposeKV(h, &pb.InternalRaftRequest{LeaseGrant: g})
	case *pb.LeaseRevokeRequest:
		n.proposeKV(h, &pb.InternalRaftRequest{LeaseRevoke: r})
	case *pb.AlarmRequest:
		if r.GetAction() == pb.AlarmRequest_GET {
			n.reply(h, &pb.AlarmResponse{Header: n.header(0), Alarms: n.alarmsFor(r)}, nil)
			return
		}
		n.proposeKV(h, &pb.InternalRaftRequest{Alarm: r})
	case *pb.LeaseKeepAliveRequest, *pb.LeaseTimeToLiveRequest:
		n.leaderLeaseRequest(h, r)
	case *pb.LeaseLeasesRequest:
		leases := n.store.Leases()
		resp := &pb.LeaseLeasesResponse{Header: n.header(0), Leases: make([]*pb.LeaseStatus, len(leases))}
		for i, l := range leases {
			resp.Leases[i] = &pb.LeaseStatus{ID: l.ID}
		}
		n.reply(h, resp, nil)
	case *pb.MemberAddRequest:
		n.memberAdd(h, r)
	case *pb.MemberRemoveRequest:
		n.memberRemove(h, r)
	case *pb.MemberUpdateRequest:
		n.memberUpdate(h, r)
	case *pb.MemberPromoteRequest:
		n.memberPromote(h, r)
	case *pb.MemberListRequest:
		if r.GetLinearizable() {
			n.linearizableRead(h, r)
			return
		}
		n.reply(h, &pb.MemberListResponse{Header: n.clusterHeader(), Members: n.members.protos()}, nil)
	case *pb.StatusRequest:
		n.reply(h, n.statusResponse(), nil)
	case *pb.HashKVRequest:
		hash, hashRev, compactRev, err := n.store.HashKV(r.GetRevision())
		if err != nil {
			n.reply(h, nil, err)
			return
		}
		n.reply(h, &pb.HashKVResponse{Header: n.header(0), Hash: hash, HashRevision: hashRev, CompactRevision: compactRev}, nil)
	case *pb.MoveLeaderRequest:
		n.moveLeader(h, r)
	default:
		n.reply(h, nil, ErrUnsupported)
	}
}

func (n *Node) isLearner() bool {
	m, ok := n.members.get(n.cfg.ID)
	return ok && m.IsLearner
}

// isReadOnlyTxn reports whether neither branch of a txn (nested ones
// included) writes: such a txn is a linearizable read, not a proposal.
func isReadOnlyTxn(r *pb.TxnRequest) bool {
	for _, branch := range [][]*pb.RequestOp{r.GetSuccess(), r.GetFailure()} {
		for _, op := range branch {
			switch {
			case op.GetRequestPut() != nil, op.GetRequestDeleteRange() != nil:
				return false
			case op.GetRequestTxn() != nil:
				if !isReadOnlyTxn(op.GetRequestTxn()) {
					return false
				}
			}
		}
	}
	return true
}

// proposeKV validates a state-machine request as etcd's API layer does and
// proposes it.
func (n *Node) proposeKV(h Handle, r *pb.InternalRaftRequest) {
	if err := kvsm.Validate(n.cfg.kvsmConfig(), r); err != nil {
		n.reply(h, nil, err)
		return
	}
	if n.needsQuota(r) && n.overQuota() {
		n.raiseNoSpace()
		n.reply(h, nil, rpctypes.ErrGRPCNoSpace)
		return
	}
	n.propose(h, r)
}

// propose puts a request into the log. The caller learns its outcome when
// the entry is applied (or the request times out: then the outcome is
// unknown, as it may still commit).
func (n *Node) propose(h Handle, r *pb.InternalRaftRequest) {
	bs := n.rn.BasicStatus()
	if bs.GetCommit() > n.appliedIndex && bs.GetCommit()-n.appliedIndex > n.cfg.CommittedNotAppliedMax {
		n.reply(h, nil, rpctypes.ErrGRPCRequestTooManyRequests)
		return
	}
	if len(n.waiting) >= n.cfg.PendingRequestsMax {
		n.reply(h, nil, rpctypes.ErrGRPCRequestTooManyRequests)
		return
	}
	id := n.nextRequestID()
	r.Header = &pb.RequestHeader{ID: id}
	if n.caller != (kvsm.AuthInfo{}) && r.GetAuthenticate() == nil {
		// The identity goes into the log: every member checks the request
		// against its user when it applies it (etcd does the same).
		r.Header.Username, r.Header.AuthRevision = n.caller.Username, n.caller.Revision
	}
	r.ID = id
	data, err := proto.Marshal(r)
	if err != nil {
		n.reply(h, nil, status.Error(codes.InvalidArgument, fmt.Sprintf("etcdserver: %v", err)))
		return
	}
	if len(data) > n.cfg.MaxRequestBytes {
		n.reply(h, nil, rpctypes.ErrGRPCRequestTooLarge)
		return
	}
	w := n.newWaiter(h, nil)
	w.id = id
	n.waiting[id] = w
	n.bufferProposal(data, w)
}

// proposeInternal proposes a request nobody waits for (lease expiry,
// attribute publication, alarms). Dropping it is harmless: its cause
// persists and it is proposed again.
func (n *Node) proposeInternal(r *pb.InternalRaftRequest) {
	id := n.nextRequestID()
	r.Header = &pb.RequestHeader{ID: id}
	r.ID = id
	data, err := proto.Marshal(r)
	if err != nil {
		panic(fmt.Sprintf("node %x: marshal internal request: %v", n.cfg.ID, err))
	}
	n.bufferProposal(data, nil)
}

// proposalBatch holds the normal entries proposed since raft last took
// proposals: one MsgProp carries them all (flushProposals), so that raft
// appends them together and a leader sends each follower one MsgApp for
// the batch, and a follower forwards one message, where a Propose per
// request would make a message per request on every hop.
type proposalBatch struct {
	entries   []*raftpb.Entry
	waiters   []*waiter // nil for internal proposals, which nobody waits for
	sizeBytes int
}

// bufferProposal adds an entry's data to the batch, first flushing the
// batch if the entry would take it past MaxSizePerMsg (a batch a follower
// forwards is one message to the leader). w waits for the entry, or is nil.
func (n *Node) bufferProposal(data []byte, w *waiter) {
	b := &n.proposals
	if len(b.entries) > 0 && uint64(b.sizeBytes+len(data)) > n.cfg.MaxSizePerMsg {
		n.flushProposals()
	}
	b.entries = append(b.entries, &raftpb.Entry{Data: data})
	b.waiters = append(b.waiters, w)
	b.sizeBytes += len(data)
}

// flushProposals steps the batch into raft as one MsgProp, as
// RawNode.Propose does for one entry. Refused (no leader, a leadership
// transfer), none of it reached a log, and every request in it fails.
// Anything that changes what raft accepts (a configuration change, a
// leadership transfer) flushes the batch first, so that requests made
// before it are proposed as if each had gone to raft when it was made.
func (n *Node) flushProposals() {
	b := &n.proposals
	if len(b.entries) == 0 {
		return
	}
	// raft keeps the entries slice (a follower forwards the message as it
	// is), so the next batch starts a new one.
	entries := b.entries
	b.entries = nil
	err := n.rn.Step(&raftpb.Message{Type: raftpb.MessageType_MsgProp.Enum(), From: proto.Uint64(n.cfg.ID), Entries: entries})
	for i, w := range b.waiters {
		b.waiters[i] = nil
		if w == nil {
			continue
		}
		switch {
		case err != nil:
			n.resolve(w, nil, n.droppedError(err))
		case n.cfg.ReportApplied:
			n.out.Proposed = append(n.out.Proposed, Proposal{Handle: w.handle, RequestID: w.id})
		}
	}
	b.waiters = b.waiters[:0]
	b.sizeBytes = 0
}

// droppedError turns raft's refusal of a proposal into etcd's error. The
// proposal reached no log, so the request did not happen.
func (n *Node) droppedError(err error) error {
	if !errors.Is(err, raft.ErrProposalDropped) {
		return status.Error(codes.Internal, fmt.Sprintf("etcdserver: %v", err))
	}
	if n.lead == raft.None {
		return rpctypes.ErrGRPCNoLeader
	}
	return rpctypes.ErrGRPCLeaderChanged
}

func (n *Node) needsQuota(r *pb.InternalRaftRequest) bool {
	switch {
	case r.GetPut() != nil, r.GetLeaseGrant() != nil:
		return true
	case r.GetTxn() != nil:
		return !isReadOnlyTxn(r.GetTxn())
	}
	return false
}

func (n *Node) overQuota() bool {
	return n.store.SizeBytes() > n.cfg.QuotaBackendBytes
}

// raiseNoSpace proposes the NOSPACE alarm unless it is already raised, as
// etcd does when a write would pass the quota.
func (n *Node) raiseNoSpace() {
	for _, a := range n.store.Alarms() {
		if a.GetAlarm() == pb.AlarmType_NOSPACE {
			return
		}
	}
	n.proposeInternal(&pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{
		Action: pb.AlarmRequest_ACTIVATE, MemberID: n.cfg.ID, Alarm: pb.AlarmType_NOSPACE,
	}})
}

func (n *Node) alarmsFor(r *pb.AlarmRequest) []*pb.AlarmMember {
	var out []*pb.AlarmMember
	for _, a := range n.store.Alarms() {
		if r.GetMemberID() != 0 && a.GetMemberID() != r.GetMemberID() {
			continue
		}
		if r.GetAlarm() != pb.AlarmType_NONE && a.GetAlarm() != r.GetAlarm() {
			continue
		}
		out = append(out, a)
	}
	return out
}

func (n *Node) statusResponse() *pb.StatusResponse {
	bs := n.rn.BasicStatus()
	size := n.store.SizeBytes()
	resp := &pb.StatusResponse{
		Header:           n.header(0),
		Version:          n.cfg.Version,
		DbSize:           size,
		DbSizeInUse:      size,
		DbSizeQuota:      n.cfg.QuotaBackendBytes,
		Leader:           bs.Lead,
		RaftIndex:        bs.GetCommit(),
		RaftTerm:         bs.GetTerm(),
		RaftAppliedIndex: n.appliedIndex,
		IsLearner:        n.isLearner(),
	}
	for _, a := range n.store.Alarms() {
		resp.Errors = append(resp.Errors, fmt.Sprintf("memberID:%d alarm:%s ", a.GetMemberID(), a.GetAlarm()))
	}
	return resp
}

// fillHeader completes a response header kvsm started (it knows only the
// revision) with the cluster, member and term.
func (n *Node) fillHeader(resp proto.Message, err error) {
	if err != nil || resp == nil {
		return
	}
	type headered interface{ GetHeader() *pb.ResponseHeader }
	hr, ok := resp.(headered)
	if !ok {
		return
	}
	h := hr.GetHeader()
	if h == nil {
		h = n.header(0)
		setHeader(resp, h)
	}
	h.ClusterId = n.cfg.ClusterID
	h.MemberId = n.cfg.ID
	h.RaftTerm = n.rn.BasicStatus().GetTerm()
}

func setHeader(resp proto.Message, h *pb.ResponseHeader) {
	switch r := resp.(type) {
	case *pb.RangeResponse:
		r.Header = h
	case *pb.PutResponse:
		r.Header = h
	case *pb.DeleteRangeResponse:
		r.Header = h
	case *pb.TxnResponse:
		r.Header = h
	case *pb.CompactionResponse:
		r.Header = h
	case *pb.LeaseGrantResponse:
		r.Header = h
	case *pb.LeaseRevokeResponse:
		r.Header = h
	case *pb.AlarmResponse:
		r.Header = h
	case *pb.WatchResponse:
		r.Header = h
	}
}

// Membership requests.

func (n *Node) memberAdd(h Handle, r *pb.MemberAddRequest) {
	if len(r.GetPeerURLs()) == 0 {
		n.reply(h, nil, rpctypes.ErrGRPCMemberBadURLs)
		return
	}
	if n.members.peerURLInUse(r.GetPeerURLs(), 0) {
		n.reply(h, nil, rpctypes.ErrGRPCPeerURLExist)
		return
	}
	if r.GetIsLearner() && n.members.learners() >= n.cfg.MaxLearners {
		n.reply(h, nil, rpctypes.ErrGRPCTooManyLearners)
		return
	}
	if !r.GetIsLearner() && n.cfg.StrictReconfigCheck {
		voters, started := n.members.voters()
		// The new member counts as a voter that has not started. As in
		// etcd, a started one-member cluster may always add a second
		// voter (the way a cluster grows back from one member's data).
		if started < (voters+1)/2+1 && !(voters == 1 && started == 1) {
			n.reply(h, nil, rpctypes.ErrGRPCMemberNotEnoughStarted)
			return
		}
	}
	reqID := n.nextRequestID()
	discriminator := reqID
	m := Member{ID: MemberID(r.GetPeerURLs(), fmt.Sprintf("%016x", n.cfg.ClusterID), &discriminator), PeerURLs: slices.Clone(r.GetPeerURLs()), IsLearner: r.GetIsLearner()}
	typ := raftpb.ConfChangeAddNode
	if r.GetIsLearner() {
		typ = raftpb.ConfChangeAddLearnerNode
	}
	n.proposeConfChange(h, r, reqID, &raftpb.ConfChange{Type: typ.Enum(), NodeId: proto.Uint64(m.ID), Context: confChangeContext(m)})
}

func (n *Node) memberRemove(h Handle, r *pb.MemberRemoveRequest) {
	m, ok := n.members.get(r.GetID())
	if !ok {
		n.reply(h, nil, rpctypes.ErrGRPCMemberNotFound)
		return
	}
	if n.cfg.StrictReconfigCheck && !m.IsLearner {
		voters, started := n.members.voters()
		if m.Started() {
			started--
		}
		if started < (voters-1)/2+1 {
			n.reply(h, nil, rpctypes.ErrGRPCMemberNotEnoughStarted)
			return
		}
	}
	n.proposeConfChange(h, r, n.nextRequestID(), &raftpb.ConfChange{Type: raftpb.ConfChangeRemoveNode.Enum(), NodeId: proto.Uint64(m.ID)})
}

func (n *Node) memberUpdate(h Handle, r *pb.MemberUpdateRequest) {
	m, ok := n.members.get(r.GetID())
	if !ok {
		n.reply(h, nil, rpctypes.ErrGRPCMemberNotFound)
		return
	}
	if len(r.GetPeerURLs()) == 0 {
		n.reply(h, nil, rpctypes.ErrGRPCMemberBadURLs)
		return
	}
	if n.members.peerURLInUse(r.GetPeerURLs(), m.ID) {
		n.reply(h, nil, rpctypes.ErrGRPCPeerURLExist)
		return
	}
	m.PeerURLs = slices.Clone(r.GetPeerURLs())
	n.proposeConfChange(h, r, n.nextRequestID(), &raftpb.ConfChange{Type: raftpb.ConfChangeUpdateNode.Enum(), NodeId: proto.Uint64(m.ID), Context: confChangeContext(m)})
}

// learnerReadyPercent is etcd's bar for promotion: the learner has at
// least this share of the leader's log.
const learnerReadyPercent = 0.9

func (n *Node) memberPromote(h Handle, r *pb.MemberPromoteRequest) {
	if !n.isLeader() {
		n.reply(h, nil, &NotLeaderError{Leader: n.lead})
		return
	}
	m, ok := n.members.get(r.GetID())
	if !ok {
		n.reply(h, nil, rpctypes.ErrGRPCMemberNotFound)
		return
	}
	if !m.IsLearner {
		n.reply(h, nil, rpctypes.ErrGRPCMemberNotLearner)
		return
	}
	st := n.rn.Status()
	leaderMatch := st.Progress[n.cfg.ID].Match
	learnerMatch := st.Progress[m.ID].Match
	if float64(learnerMatch) < float64(leaderMatch)*learnerReadyPercent {
		n.reply(h, nil, rpctypes.ErrGRPCLearnerNotReady)
		return
	}
	n.proposeConfChange(h, r, n.nextRequestID(), &raftpb.ConfChange{Type: raftpb.ConfChangeAddNode.Enum(), NodeId: proto.Uint64(m.ID)})
}

func (n *Node) proposeConfChange(h Handle, op proto.Message, reqID uint64, cc *raftpb.ConfChange) {
	if len(n.waiting) >= n.cfg.PendingRequestsMax {
		n.reply(h, nil, rpctypes.ErrGRPCRequestTooManyRequests)
		return
	}
	cc.Id = proto.Uint64(reqID)
	// Entries proposed before the change go into the log before it.
	n.flushProposals()
	if err := n.rn.ProposeConfChange(cc); err != nil {
		n.reply(h, nil, n.droppedError(err))
		return
	}
	w := n.newWaiter(h, op)
	w.id = reqID
	n.waiting[reqID] = w
}

func (n *Node) moveLeader(h Handle, r *pb.MoveLeaderRequest) {
	if !n.isLeader() {
		n.reply(h, nil, rpctypes.ErrGRPCNotLeader)
		return
	}
	target, ok := n.members.get(r.GetTargetID())
	if !ok || target.IsLearner {
		n.reply(h, nil, rpctypes.ErrGRPCBadLeaderTransferee)
		return
	}
	if target.ID == n.cfg.ID {
		n.reply(h, &pb.MoveLeaderResponse{Header: n.header(0)}, nil)
		return
	}
	if n.transfer != nil {
		n.resolve(n.transfer, nil, rpctypes.ErrGRPCLeaderChanged)
	}
	w := n.newWaiter(h, r)
	w.target = target.ID
	n.transfer = w
	// Requests made before the transfer are proposed before it: raft
	// refuses proposals while it transfers.
	n.flushProposals()
	n.rn.TransferLeader(target.ID)
}

// maybePublish proposes this member's name and client URLs once it runs
// and the applied member table does not have them yet (etcd publishes them
// the same way, through the log, so every member learns them).
func (n *Node) maybePublish() {
	if n.lead == raft.None || n.tick < n.publishAt || n.cfg.Name == "" {
		return
	}
	m, ok := n.members.get(n.cfg.ID)
	if !ok || (m.Name == n.cfg.Name && slices.Equal(m.ClientURLs, n.cfg.ClientURLs)) {
		return
	}
	n.publishAt = n.tick + int64(n.cfg.RequestTimeoutTicks)
	n.proposeInternal(&pb.InternalRaftRequest{ClusterMemberAttrSet: memberAttrSet(n.cfg.ID, n.cfg.Name, n.cfg.ClientURLs)})
}
