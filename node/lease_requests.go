package node

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/noded/noded/kvsm"
)

// Lease requests and the leader's lease clock: when a lease is renewed, and
// when its expiry is proposed. (The lease table itself is kvsm's state.)

// leaderLeaseRequest serves a request only the leader answers: a
// keepalive or a time-to-live. The leader holds it until it has applied
// everything committed when the request arrived, and an entry of its own
// term:
//   - A grant a client saw answered (through a follower, which may apply
//     before the leader does) is committed, so the leader knows of the
//     lease before it answers for it.
//   - A new leader's log may still hold a revoke that an earlier leader
//     proposed and it has not applied (the entry commits under this
//     leader): renewing the lease meanwhile would promise its holder a TTL
//     that the revoke cuts short once it applies. An entry of its own term
//     applies after every entry before it, such revokes included, and the
//     revokes this leader proposes itself come only once a lease has
//     expired on its clock, after which no keepalive renews it.
func (n *Node) leaderLeaseRequest(h Handle, op proto.Message) {
	if !n.isLeader() {
		n.reply(h, nil, &NotLeaderError{Leader: n.lead})
		return
	}
	commit := n.rn.BasicStatus().GetCommit()
	if len(n.heldLeaseRequests) == 0 && n.leaseRequestsReady(commit) {
		resp, err := n.answerLeaseRequest(n.caller, op)
		n.reply(h, resp, err)
		return
	}
	if len(n.heldLeaseRequests) >= n.cfg.PendingRequestsMax {
		n.reply(h, nil, rpctypes.ErrGRPCRequestTooManyRequests)
		return
	}
	w := n.newWaiter(h, op)
	w.ai, w.appliedMin = n.caller, commit
	n.heldLeaseRequests = append(n.heldLeaseRequests, w)
}

// leaseRequestsReady reports whether a lease request that needs appliedMin
// applied may be answered now.
func (n *Node) leaseRequestsReady(appliedMin uint64) bool {
	return n.appliedIndex >= appliedMin && n.appliedInCurrentTerm()
}

// serveHeldLeaseRequests answers the held lease requests the leader may
// answer now, in the order they came (or tells them all it no longer
// leads).
func (n *Node) serveHeldLeaseRequests() {
	served := 0
	for _, w := range n.heldLeaseRequests {
		switch {
		case w.done: // timed out
		case !n.isLeader():
			n.resolve(w, nil, &NotLeaderError{Leader: n.lead})
		case !n.leaseRequestsReady(w.appliedMin):
			n.heldLeaseRequests = n.heldLeaseRequests[served:]
			return
		default:
			resp, err := n.answerLeaseRequest(w.ai, w.op)
			n.resolve(w, resp, err)
		}
		served++
	}
	n.heldLeaseRequests = n.heldLeaseRequests[:0]
}

// appliedInCurrentTerm reports whether the applied index is at an entry of
// the current term.
func (n *Node) appliedInCurrentTerm() bool {
	term, err := n.storage.Term(n.appliedIndex)
	return err == nil && term == n.rn.BasicStatus().GetTerm()
}

// answerLeaseRequest checks the caller's rights (write on every key of a
// lease to renew it, read to see its time to live) and answers.
func (n *Node) answerLeaseRequest(ai kvsm.AuthInfo, op proto.Message) (proto.Message, error) {
	switch r := op.(type) {
	case *pb.LeaseKeepAliveRequest:
		if err := n.store.CheckLeaseKeys(ai, r.GetID()); err != nil {
			return nil, err
		}
		return n.leaseKeepAlive(r), nil
	case *pb.LeaseTimeToLiveRequest:
		if err := n.store.CheckLeaseRead(ai, r.GetID()); err != nil {
			return nil, err
		}
		return n.leaseTimeToLive(r), nil
	}
	return nil, ErrUnsupported
}

func (n *Node) leaseKeepAlive(r *pb.LeaseKeepAliveRequest) *pb.LeaseKeepAliveResponse {
	info, ok := n.store.Lease(r.GetID())
	expiry, tracked := n.leases.expiry(r.GetID())
	if !ok || !tracked || expiry <= n.tick {
		// Unknown, or expired with its revoke on the way: etcd answers TTL 0,
		// and a keepalive must never bring an expiring lease back.
		return &pb.LeaseKeepAliveResponse{Header: n.header(0), ID: r.GetID(), TTL: 0}
	}
	n.armLease(LeaseKeepAliveAcked, r.GetID(), info.GrantedTTLSeconds, 0)
	return &pb.LeaseKeepAliveResponse{Header: n.header(0), ID: r.GetID(), TTL: info.GrantedTTLSeconds}
}

func (n *Node) leaseTimeToLive(r *pb.LeaseTimeToLiveRequest) *pb.LeaseTimeToLiveResponse {
	info, ok := n.store.Lease(r.GetID())
	if !ok {
		return &pb.LeaseTimeToLiveResponse{Header: n.header(0), ID: r.GetID(), TTL: -1}
	}
	remaining := int64(0)
	if expiry, ok := n.leases.expiry(r.GetID()); ok {
		remaining = n.cfg.secondsFromTicks(expiry - n.tick)
	}
	resp := &pb.LeaseTimeToLiveResponse{Header: n.header(0), ID: r.GetID(), TTL: remaining, GrantedTTL: info.GrantedTTLSeconds}
	if r.GetKeys() {
		resp.Keys = info.Keys
	}
	return resp
}

func (n *Node) leaseEvent(kind LeaseEventKind, id, ttlTicks int64) {
	if !n.cfg.ReportLeaseEvents {
		return
	}
	n.out.LeaseEvents = append(n.out.LeaseEvents, LeaseEvent{Kind: kind, LocalTick: n.tick, Lease: id, TTLTicks: ttlTicks})
}

// becameLeader gives every lease its full TTL plus an election timeout from
// now: keepalives the previous leader acknowledged are unknown here, and
// this is the only way not to expire a lease its holder kept alive.
func (n *Node) becameLeader() {
	n.leaseEvent(LeaseBecameLeader, 0, 0)
	n.refreshAllLeases()
}

func (n *Node) refreshAllLeases() {
	n.leases.reset()
	for _, l := range n.store.Leases() {
		n.armLease(LeaseTakenOver, l.ID, l.GrantedTTLSeconds, int64(n.cfg.ElectionTicks))
	}
}

// armLease sets lease id to expire a full TTL of ttlSeconds (plus
// extraTicks) after now on this member's clock, and reports why as kind.
//
// The guarantee, for grant, keepalive and a new leader's takeover alike:
// the leader proposes the lease's revoke no earlier than TTL after it
// handled the renewal, measured by its own clock (expiryTicks rounds up to
// the next tick boundary). A client may therefore count on a lease it
// renewed living at least TTL from when it sent the keepalive (the leader
// handles it later than that), less only what the leader's clock runs fast
// against the client's. The production host spaces ticks at least one
// interval apart, so a delayed tick never makes the next one early.
func (n *Node) armLease(kind LeaseEventKind, id, ttlSeconds, extraTicks int64) {
	ttlTicks := n.cfg.ticksFromSeconds(ttlSeconds)
	n.leases.set(id, n.tick+n.expiryTicks(ttlTicks)+extraTicks)
	n.leaseEvent(kind, id, ttlTicks)
}

// leaseRevokeRetryTicks is how long the leader waits for an expiry revoke
// to apply before proposing it again (the first may have been dropped).
func (n *Node) leaseRevokeRetryTicks() int64 { return int64(2 * n.cfg.ElectionTicks) }

func (n *Node) expireLeases() {
	if !n.isLeader() {
		return
	}
	for _, id := range n.leases.popExpired(n.tick, n.cfg.LeaseRevokesPerTickMax) {
		if _, ok := n.store.Lease(id); !ok {
			n.leases.forget(id)
			continue
		}
		n.leaseEvent(LeaseExpiryProposed, id, 0)
		n.proposeInternal(&pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}})
		n.leases.wakeAt(id, n.tick+n.leaseRevokeRetryTicks())
	}
}
