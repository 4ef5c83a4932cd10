package kvsm

import (
	"bytes"
	"math"

	"github.com/tidwall/btree"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// lease is one granted lease and the keys attached to it. Whether and when
// it expires is node's business: expiry arrives here as a LeaseRevoke.
//
// Invariant: keys holds exactly the live keys whose current revision names
// this lease.
type lease struct {
	id                int64
	grantedTTLSeconds int64
	keys              *btree.BTreeG[[]byte]
}

func leaseLess(a, b *lease) bool { return a.id < b.id }

func newLeaseTree() *btree.BTreeG[*lease] {
	return btree.NewBTreeGOptions(leaseLess, btree.Options{NoLocks: true})
}

func newLease(id, ttlSeconds int64) *lease {
	return &lease{
		id:                id,
		grantedTTLSeconds: ttlSeconds,
		keys:              btree.NewBTreeGOptions(func(a, b []byte) bool { return bytes.Compare(a, b) < 0 }, btree.Options{NoLocks: true}),
	}
}

// LeaseInfo describes one lease as state.
type LeaseInfo struct {
	ID                int64
	GrantedTTLSeconds int64
	Keys              [][]byte // sorted; shared with the store, read-only
}

func (l *lease) info() LeaseInfo {
	info := LeaseInfo{ID: l.id, GrantedTTLSeconds: l.grantedTTLSeconds, Keys: make([][]byte, 0, l.keys.Len())}
	l.keys.Scan(func(k []byte) bool {
		info.Keys = append(info.Keys, k)
		return true
	})
	return info
}

func (s *Store) getLease(id int64) *lease {
	l, _ := s.leases.Get(&lease{id: id})
	return l
}

// Lease returns one lease, if it is granted.
func (s *Store) Lease(id int64) (LeaseInfo, bool) {
	l := s.getLease(id)
	if l == nil {
		return LeaseInfo{}, false
	}
	return l.info(), true
}

// Leases returns every granted lease in ascending ID order.
func (s *Store) Leases() []LeaseInfo {
	out := make([]LeaseInfo, 0, s.leases.Len())
	s.leases.Scan(func(l *lease) bool {
		out = append(out, l.info())
		return true
	})
	return out
}

func (s *Store) attach(id int64, key []byte) {
	l := s.getLease(id)
	assert(l != nil, "attach to missing lease %d", id)
	l.keys.Set(key)
}

func (s *Store) detach(id int64, key []byte) {
	l := s.getLease(id)
	assert(l != nil, "detach from missing lease %d", id)
	_, ok := l.keys.Delete(key)
	assert(ok, "key %q not attached to lease %d", key, id)
}

// applyLeaseGrant grants a lease as etcd's lessor.Grant does, except that an
// ID of 0 makes the store pick one: the lowest unused ID at or above a
// counter that only grows, so a picked ID is never picked twice.
func (s *Store) applyLeaseGrant(r *pb.LeaseGrantRequest) ApplyResult {
	if r.GetTTL() > MaxLeaseTTLSeconds {
		return s.failed(rpctypes.ErrGRPCLeaseTTLTooLarge)
	}
	id := r.GetID()
	picked := id == 0
	if picked {
		id = s.nextLeaseID
		for id > 0 && s.getLease(id) != nil {
			if id == math.MaxInt64 {
				id = 0
				break
			}
			id++
		}
		if id <= 0 {
			// 2^63 picks: the ID space is spent.
			return s.failed(rpctypes.ErrGRPCLeaseExist)
		}
	} else if s.getLease(id) != nil {
		return s.failed(rpctypes.ErrGRPCLeaseExist)
	}
	ttl := max(r.GetTTL(), s.cfg.MinLeaseTTLSeconds)
	s.leases.Set(newLease(id, ttl))
	if picked {
		if id == math.MaxInt64 {
			s.nextLeaseID = math.MaxInt64 // the last ID; the next pick finds it taken
		} else {
			s.nextLeaseID = id + 1
		}
	}
	return ApplyResult{
		Resp: &pb.LeaseGrantResponse{Header: s.header(), ID: id, TTL: ttl},
		Rev:  s.kv.rev,
	}
}

// applyLeaseRevoke deletes every key attached to the lease at one revision
// (in key order, as etcd sorts them) and forgets the lease.
func (s *Store) applyLeaseRevoke(r *pb.LeaseRevokeRequest) ApplyResult {
	l := s.getLease(r.GetID())
	if l == nil {
		return s.failed(rpctypes.ErrGRPCLeaseNotFound)
	}
	w := s.beginWrite()
	var keys [][]byte
	l.keys.Scan(func(k []byte) bool {
		keys = append(keys, k)
		return true
	})
	for _, k := range keys {
		w.deleteKey(s.lookup(k))
	}
	assert(l.keys.Len() == 0, "lease %d still has %d keys after revoke", l.id, l.keys.Len())
	s.leases.Delete(l)
	events := w.end()
	return ApplyResult{
		Resp:   &pb.LeaseRevokeResponse{Header: s.header()},
		Rev:    s.kv.rev,
		Events: events,
	}
}
