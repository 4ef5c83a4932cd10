package node

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"
)

// Lease requests and the leader's lease clock: when a lease is renewed, and
// when its expiry is proposed. (The lease table itself is kvsm's state.)

// leaderLeaseRequest serves a request only the leader answers: a
// keepalive or a time-to-live. A new leader holds them until it has
// applied an entry of its own term. Its log may still hold a revoke that
// an earlier leader proposed and it has not applied yet (the entry commits
// under this leader): renewing the lease meanwhile would promise its
// holder a TTL that the revoke cuts short once it applies. An entry of its
// own term applies after every entry before it, such revokes included, and
// the revokes this leader proposes itself come only once a lease has
// expired on its clock, after which no keepalive renews it.
func (n *Node) leaderLeaseRequest(h Handle, op proto.Message) {
	if !n.isLeader() {
		n.reply(h, nil, &NotLeaderError{Leader: n.lead})
		return
	}
	// The caller's rights are checked as the request arrives: write on
	// every key of a lease to renew it, read to see its time to live.
	var err error
	switch r := op.(type) {
	case *pb.LeaseKeepAliveRequest:
		err = n.store.CheckLeaseKeys(n.caller, r.GetID())
	case *pb.LeaseTimeToLiveRequest:
		err = n.store.CheckLeaseRead(n.caller, r.GetID())
	}
	if err != nil {
		n.reply(h, nil, err)
		return
	}
	switch {
	case !n.appliedInCurrentTerm():
		if len(n.heldLeaseRequests) >= n.cfg.PendingRequestsMax {
			n.reply(h, nil, rpctypes.ErrGRPCRequestTooManyRequests)
			return
		}
		n.heldLeaseRequests = append(n.heldLeaseRequests, n.newWaiter(h, op))
	default:
		resp, err := n.answerLeaseRequest(op)
		n.reply(h, resp, err)
	}
}

// serveHeldLeaseRequests answers the held lease requests once the leader
// may (or tells them it no longer leads).
func (n *Node) serveHeldLeaseRequests() {
	if len(n.heldLeaseRequests) == 0 || (n.isLeader() && !n.appliedInCurrentTerm()) {
		return
	}
	held := n.heldLeaseRequests
	n.heldLeaseRequests = nil
	for _, w := range held {
		if w.done {
			continue // timed out
		}
		if !n.isLeader() {
			n.resolve(w, nil, &NotLeaderError{Leader: n.lead})
			continue
		}
		resp, err := n.answerLeaseRequest(w.op)
		n.resolve(w, resp, err)
	}
}

// appliedInCurrentTerm reports whether the applied index is at an entry of
// the current term.
func (n *Node) appliedInCurrentTerm() bool {
	term, err := n.storage.Term(n.appliedIndex)
	return err == nil && term == n.rn.BasicStatus().GetTerm()
}

func (n *Node) answerLeaseRequest(op proto.Message) (proto.Message, error) {
	switch r := op.(type) {
	case *pb.LeaseKeepAliveRequest:
		return n.leaseKeepAlive(r), nil
	case *pb.LeaseTimeToLiveRequest:
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
